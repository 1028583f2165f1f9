// k8s-validate.js — validates every object in deploy/k8s/*.yaml against the Kubernetes API schemas
// (npm's kubernetes-models, which checks types, required fields and formats with ajv), without a
// cluster. Run through scripts/k8s-validate.sh, which installs the two npm packages in a temp dir.
// Usage: node k8s-validate.js FILE...   Exit 0 when every object validates, 1 otherwise.
"use strict";
const fs = require("fs");
const YAML = require("yaml");

// apiVersion -> module path under kubernetes-models ("v1" is the core group)
function modelFor(apiVersion, kind) {
  const dir = apiVersion.includes("/") ? apiVersion : apiVersion;   // "apps/v1", "v1", "policy/v1"
  try {
    return require("kubernetes-models/" + dir + "/" + kind)[kind];
  } catch (e) {
    return null;
  }
}

let bad = 0, n = 0;
for (const file of process.argv.slice(2)) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length) {
      console.error(`${file}: YAML: ${doc.errors[0].message}`);
      bad++;
      continue;
    }
    const obj = doc.toJS();
    if (!obj)
      continue;
    n++;
    const where = `${file}: ${obj.kind} ${obj.metadata && obj.metadata.name}`;
    const Model = modelFor(obj.apiVersion || "", obj.kind || "");
    if (!Model) {
      console.error(`${where}: unknown apiVersion/kind ${obj.apiVersion} ${obj.kind}`);
      bad++;
      continue;
    }
    try {
      new Model(obj).validate();
      console.log(`${where}: ok`);
    } catch (e) {
      console.error(`${where}: ${e.message}`);
      bad++;
    }
  }
}
console.log(`${n} object(s), ${bad} error(s)`);
process.exit(bad || n === 0 ? 1 : 0);
