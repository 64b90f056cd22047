// Copy the pages' browser assets from node_modules into static/vendor/<package>-<version>/ with
// their licenses.  Run after `npm ci` when package.json changes; the copies are committed, so
// neither the server nor CI needs npm or a CDN.
// asciinema-player's bundle includes solid-js (MIT): its license is kept beside it.
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, 'node_modules');
const target = join(here, '..', 'static', 'vendor');
// package -> {file in the package: name in static/vendor/<package>-<version>/}
const assets = {
  'htmx.org': {
    'dist/htmx.min.js': 'htmx.min.js',
    LICENSE: 'LICENSE',
  },
  'htmx-ext-ws': {
    'dist/ws.min.js': 'ws.min.js',
    LICENSE: 'LICENSE',
  },
  'asciinema-player': {
    'dist/bundle/asciinema-player.min.js': 'asciinema-player.min.js',
    'dist/bundle/asciinema-player.css': 'asciinema-player.css',
    LICENSE: 'LICENSE',
    '../solid-js/LICENSE': 'LICENSE.solid-js',
  },
};

for (const [name, files] of Object.entries(assets)) {
  const source = join(modules, name);
  const { version } = JSON.parse(readFileSync(join(source, 'package.json'), 'utf8'));
  const destination = join(target, `${name}-${version}`);
  rmSync(destination, { recursive: true, force: true });
  mkdirSync(destination, { recursive: true });
  for (const [from, to] of Object.entries(files)) {
    copyFileSync(join(source, from), join(destination, to));
  }
  console.log(`${name} ${version} -> ${destination}`);
}
