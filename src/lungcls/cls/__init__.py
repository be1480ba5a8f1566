"""Stage 2: crop-and-mask + ResNet-50 classification of COVID-19 / Non-COVID / Normal."""
