// Copy the dashboard's browser assets from node_modules into static/vendor/<package>-<version>/
// with their licenses.  Run after `npm ci` when package.json changes; the copies are committed,
// so neither the server nor CI needs npm or a CDN.
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, '..', '..', 'static', 'vendor');
const assets = {
  'htmx.org': ['dist/htmx.min.js', 'LICENSE'],
  'htmx-ext-ws': ['dist/ws.min.js', 'LICENSE'],
};

for (const [name, files] of Object.entries(assets)) {
  const source = join(here, 'node_modules', name);
  const { version } = JSON.parse(readFileSync(join(source, 'package.json'), 'utf8'));
  const destination = join(target, `${name}-${version}`);
  rmSync(destination, { recursive: true, force: true });
  mkdirSync(destination, { recursive: true });
  for (const file of files) {
    copyFileSync(join(source, file), join(destination, file.split('/').pop()));
  }
  console.log(`${name} ${version} -> ${destination}`);
}
