import { Parser } from '@asyncapi/parser';
import { readFileSync } from 'node:fs';
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(process.argv[2], 'utf8'));
const errors = diagnostics.filter(d => d.severity === 0);
for (const d of diagnostics) console.log(JSON.stringify({severity: d.severity, code: d.code, message: d.message, path: d.path}));
if (!document || errors.length) { console.error(`invalid: ${errors.length} errors`); process.exit(1); }
console.log(`valid: ${document.channels().length} channels, ${document.messages().length} messages`);
