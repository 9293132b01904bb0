// Node peer of bench/channel.py: the same scenario with the npm `mediasoup`
// package (3.27.1) driving the worker binary named by MEDIASOUP_WORKER_BIN.
//
// Usage (bench/channel.py runs it; it is not meant to be run by hand):
//   node --expose-gc channel.mjs timing '<scenario JSON>'
//   node --expose-gc channel.mjs memory '<scenario JSON>'
// Prints one JSON object on stdout: raw per-operation samples in nanoseconds
// (timing) or RSS figures in bytes (memory). Statistics are computed by the
// Python side from the raw samples, so both runtimes are summarised alike.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import process from 'node:process';

const require = createRequire(import.meta.url);
const mediasoup = require('mediasoup');

const [mode, scenarioJson] = process.argv.slice(2);
const scenario = JSON.parse(scenarioJson);

function rssBytes() {
	// VmRSS of this process, as the Python side reads it (process.memoryUsage().rss is the same figure).
	const status = readFileSync('/proc/self/status', 'utf8');
	const match = /VmRSS:\s+(\d+) kB/.exec(status);
	return Number(match[1]) * 1024;
}

function collect() {
	if (global.gc) {
		global.gc();
		global.gc();
	}
}

function rtpParameters(i) {
	const params = structuredClone(scenario.rtpParameters);
	params.encodings = [{ ssrc: scenario.ssrcBase + i, rtx: { ssrc: scenario.rtxSsrcBase + i } }];
	return params;
}

// The time and the CPU time of this process (microseconds, getrusage) at once.
// The CPU time is read outside the wall-clock window: getrusage is a system call.
function now() {
	const cpu = process.cpuUsage();
	return [process.hrtime.bigint(), cpu];
}

async function iteration(worker, i, samples) {
	const record = (op, start) => {
		const wall = process.hrtime.bigint();
		const cpu = process.cpuUsage(start[1]);
		if (samples) {
			samples[op].push(Number(wall - start[0]));
			samples[`cpu:${op}`].push((cpu.user + cpu.system) * 1000);
		}
	};
	let t = now();
	const router = await worker.createRouter({ mediaCodecs: scenario.mediaCodecs });
	record('create_router', t);
	const rtpCapabilities = router.rtpCapabilities; // fetched outside the timed calls (a copy)

	t = now();
	const transport = await router.createWebRtcTransport({ listenInfos: scenario.listenInfos });
	record('create_webrtc_transport', t);

	t = now();
	await transport.connect({ dtlsParameters: scenario.dtlsParameters });
	record('connect', t);

	const params = rtpParameters(i);
	t = now();
	const producer = await transport.produce({ kind: 'video', rtpParameters: params });
	record('produce', t);

	t = now();
	const consumer = await transport.consume({ producerId: producer.id, rtpCapabilities });
	record('consume', t);

	t = now();
	await consumer.pause();
	record('pause', t);

	t = now();
	await consumer.resume();
	record('resume', t);

	t = now();
	await transport.getStats();
	record('get_stats', t);

	t = now();
	transport.close();
	record('close_transport', t);

	t = now();
	router.close();
	record('close_router', t);
}

async function timing() {
	const worker = await mediasoup.createWorker({ logLevel: 'none' });
	for (let i = 0; i < scenario.warmup; i++) {
		await iteration(worker, i, null);
	}
	// A round trip so that the warm-up's fire-and-forget closes are answered.
	await worker.getResourceUsage();
	collect();
	const samples = Object.fromEntries(scenario.ops.flatMap((op) => [[op, []], [`cpu:${op}`, []]]));
	const t0 = process.hrtime.bigint();
	for (let i = 0; i < scenario.iterations; i++) {
		await iteration(worker, scenario.warmup + i, samples);
	}
	await worker.getResourceUsage();
	const wallNs = Number(process.hrtime.bigint() - t0);
	worker.close();
	return { samples, wallNs };
}

async function memory() {
	const worker = await mediasoup.createWorker({ logLevel: 'none' });
	// Warm up (lazy loading, JIT) with the same calls, then measure a fresh router.
	for (let i = 0; i < scenario.memoryWarmup; i++) {
		await iteration(worker, i, null);
	}
	await worker.getResourceUsage();
	const router = await worker.createRouter({ mediaCodecs: scenario.mediaCodecs });
	collect();
	const before = rssBytes();
	const transports = [];
	for (let i = 0; i < scenario.memoryTransports; i++) {
		transports.push(await router.createWebRtcTransport({ listenInfos: scenario.listenInfos }));
	}
	collect();
	const after = rssBytes();
	router.close();
	worker.close();
	return {
		transports: transports.length,
		rssBefore: before,
		rssAfter: after,
	};
}

const result = mode === 'memory' ? await memory() : await timing();
result.runtime = `node ${process.version}, mediasoup ${mediasoup.version}`;
process.stdout.write(JSON.stringify(result));
