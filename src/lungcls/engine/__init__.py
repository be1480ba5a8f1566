"""The one training engine shared by both stages: a Task per stage, one ``fit`` loop."""
