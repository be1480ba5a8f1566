// Render /openapi.json as a plain list of routes, their parameters and answers (no external viewer needed).
"use strict";
(async () => {
  const spec = await fetch("/openapi.json").then((r) => r.json());
  const main = document.getElementById("api");
  const add = (parent, tag, text, cls) => {
    const e = document.createElement(tag); if (text) e.textContent = text; if (cls) e.className = cls;
    parent.append(e); return e;
  };
  add(main, "p", `${spec.info.title} ${spec.info.version}: ${spec.info.description || ""}`);
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const card = add(main, "section", "", "card route");
      add(card, "h2", `${method.toUpperCase()} ${path}`);
      if (op.description || op.summary) add(card, "p", op.description || op.summary);
      const params = (op.parameters || []).map((p) => `${p.name} (${p.in}${p.required ? ", required" : ""}): ` +
        `${(p.schema && p.schema.type) || ""}${p.description ? " - " + p.description : ""}`);
      const body = op.requestBody && op.requestBody.content;
      if (body) params.push(`body: ${Object.keys(body).join(", ")} (field "files": one or more files)`);
      if (params.length) { const ul = add(card, "ul"); params.forEach((t) => add(ul, "li", t)); }
      add(card, "p", "answers: " + Object.keys(op.responses || {}).join(", "), "models");
    }
  }
})().catch((e) => { document.getElementById("api").textContent = "could not read /openapi.json: " + e; });
