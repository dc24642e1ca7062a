// Validates an AsyncAPI document with the AsyncAPI Initiative's parser (@asyncapi/parser): the
// official JSON schema of its version, the payload schemas, every $ref, and the parser's rules.
// Prints one JSON line: {"errors": [...], "warnings": [...]}, each {code, message, path}; exits 1
// when there is an error. Usage: node validate.mjs <file>
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const file = process.argv[2];
const source = await readFile(file, "utf8");
const diagnostics = await new Parser().validate(source, { source: file });
const shape = (d) => ({ code: String(d.code), message: d.message, path: d.path.join("/") });
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).map(shape);
const warnings = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning).map(shape);
console.log(JSON.stringify({ errors, warnings }));
process.exit(errors.length ? 1 : 0);
