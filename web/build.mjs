// Bundle the meeting page into dist/ with esbuild (run by `make setup`: `npm ci && npm run build`).
//
// dist/assets/app-<hash>.js and app-<hash>.css are content-hashed, so aiohttp serves them
// with a year-long immutable cache; dist/index.html names them and is served with no-cache.
// Nothing is fetched at run time: every byte the page needs is in dist/.
import * as esbuild from 'esbuild';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');

await rm(dist, { recursive: true, force: true });
await mkdir(join(dist, 'assets'), { recursive: true });

const result = await esbuild.build({
	entryPoints: [join(here, 'src/main.js'), join(here, 'src/style.css')],
	bundle: true,
	minify: true,
	sourcemap: false,
	format: 'esm',
	platform: 'browser',
	target: ['chrome100', 'firefox100', 'safari15'],
	entryNames: '[name]-[hash]',
	outdir: join(dist, 'assets'),
	metafile: true,
	legalComments: 'none',
	logLevel: 'warning',
	define: { 'process.env.NODE_ENV': '"production"', global: 'globalThis' },
});

const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p));
// Precompressed copies: aiohttp's FileResponse sends name.gz to clients that accept gzip.
for (const name of outputs) {
	const path = join(dist, 'assets', name);
	await writeFile(`${path}.gz`, gzipSync(await readFile(path), { level: 9 }));
}
const js = outputs.find((name) => name.endsWith('.js'));
const css = outputs.find((name) => name.endsWith('.css'));
const template = await readFile(join(here, 'src/index.html'), 'utf8');
await writeFile(
	join(dist, 'index.html'),
	template.replace('%APP_JS%', `/assets/${js}`).replace('%APP_CSS%', `/assets/${css}`),
);
const gzipped = gzipSync(await readFile(join(dist, 'assets', js)), { level: 9 }).length;
console.log(`web: built dist/assets/${js} (${(gzipped / 1024).toFixed(1)} KiB gzipped) and ${css}`);
