// Validates custom resources against the published CRD schemas in the @kubernetes-models/* npm
// packages. stdin: a JSON list of manifests; stdout: a JSON list, null or the error per manifest.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const packages = {
  "monitoring.coreos.com": "prometheus-operator",
  "networking.istio.io": "istio",
  "gateway.envoyproxy.io": "envoy-gateway",
};
const require = createRequire(pathToFileURL(process.cwd() + "/").href);
const docs = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const doc of docs) {
  const [group, version] = doc.apiVersion.split("/");
  const path = require.resolve(`@kubernetes-models/${packages[group]}/package.json`).replace(/package\.json$/, "");
  const mod = await import(pathToFileURL(`${path}${group}/${version}/${doc.kind}.js`).href);
  try {
    new mod[doc.kind](doc).validate();
    results.push(null);
  } catch (e) {
    results.push(String(e.message || e));
  }
}
console.log(JSON.stringify(results));
