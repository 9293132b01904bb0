// RoomClient: one participant's connection to a Parley room, mediasoup-demo's v3 protocol
// (protoo over a WebSocket, mediasoup-client for the media). No DOM here: the view
// listens to the events below and calls the methods.
//
// Events (CustomEvent, `detail` as named):
//   state         {state: 'connecting'|'joined'|'reconnecting'|'closed', reason?}
//   peer          {peer}                   a participant joined or changed name
//   peerclosed    {peerId}
//   consumer      {consumer, peerId}       a remote track is ready (consumer.track)
//   consumerclosed{consumer, peerId}
//   consumerpause {consumer, peerId, paused}  the producer (or we) paused / resumed it
//   producer      {producer}               a local producer was made (or closed: producer.closed)
//   speaker       {peerId|null}
//   chat          {message}                every stored message once (history or live)
//   recording     {active, by?}
//   failure       {message}                something a person should read
import { Device } from 'mediasoup-client';
import protooClient from 'protoo-client';
import { tokenClaims, tokenExpired } from './api.js';

/** Simulcast webcam: three layers, a quarter, half and full resolution. */
const WEBCAM_ENCODINGS = [
	{ scaleResolutionDownBy: 4, maxBitrate: 150_000 },
	{ scaleResolutionDownBy: 2, maxBitrate: 500_000 },
	{ scaleResolutionDownBy: 1, maxBitrate: 1_200_000 },
];
const RETRY = { retries: 8, factor: 2, minTimeout: 1000, maxTimeout: 8000 };

export class RoomClient extends EventTarget {
	/**
	 * @param {{roomId: string, peerId: string, displayName: string, token?: string}} options
	 */
	constructor({ roomId, peerId, displayName, token }) {
		super();
		this.roomId = roomId;
		this.peerId = peerId;
		this.displayName = displayName;
		this.token = token || '';
		this.state = 'new';
		this.device = null;
		this.protoo = null;
		this.sendTransport = null;
		this.recvTransport = null;
		/** @type {Map<string, any>} kind or 'share' -> Producer */
		this.producers = new Map();
		/** @type {Map<string, any>} consumer id -> Consumer (appData.peerId) */
		this.consumers = new Map();
		// newConsumer requests still being set up, by consumer id: the server notifies
		// consumerPaused/Resumed/Closed from the moment it made the consumer, so those
		// notifications may arrive before consume() has resolved.
		this.pendingConsumers = new Map();
		/** @type {Map<string, {id: string, displayName: string}>} */
		this.peers = new Map();
		this.seenMessages = new Set();
		this.recording = false;
		this.closed = false;
		/** Local tracks to publish after each (re)join: kind -> MediaStreamTrack. */
		this.tracks = new Map();
		this.joinedOnce = false;
	}

	emit(type, detail = {}) {
		this.dispatchEvent(new CustomEvent(type, { detail }));
	}

	setState(state, reason) {
		this.state = state;
		this.emit('state', { state, reason });
	}

	/** Connect, join and publish `tracks` ({audio?, video?}: MediaStreamTracks, possibly muted). */
	join({ audio, video, micMuted = false, camMuted = false }) {
		if (audio) this.tracks.set('audio', { track: audio, paused: micMuted });
		if (video) this.tracks.set('video', { track: video, paused: camMuted });
		const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
		const query = new URLSearchParams({ roomId: this.roomId, peerId: this.peerId });
		if (this.token) query.set('token', this.token);
		const transport = new protooClient.WebSocketTransport(`${scheme}://${location.host}/?${query}`, { retry: RETRY });
		this.protoo = new protooClient.Peer(transport);
		this.setState('connecting');
		this.protoo.on('open', () => this.onOpen().catch((error) => this.joinFailed(error)));
		this.protoo.on('disconnected', () => {
			if (this.closed) return;
			this.dropMedia();
			this.setState('reconnecting');
		});
		this.protoo.on('failed', () => this.connectFailed());
		this.protoo.on('close', () => {
			if (this.closed) return;
			this.closed = true;
			this.dropMedia();
			this.setState('closed', this.joinedOnce ? 'The connection to the meeting was lost.' : 'The server closed the connection (the room may be full, or the link may have expired).');
		});
		this.protoo.on('request', (request, accept, reject) => this.onRequest(request, accept, reject));
		this.protoo.on('notification', (notification) => this.onNotification(notification));
	}

	/** Leave the meeting: close the socket (the server removes us at once) and local media. */
	leave() {
		if (this.closed) return;
		this.closed = true;
		this.protoo?.close();
		this.dropMedia();
		for (const { track } of this.tracks.values()) track.stop();
		this.setState('closed', 'You left the meeting.');
	}

	/** The WebSocket did not open. A browser is not told why: find out what a person can do. */
	async connectFailed() {
		if (this.closed || this.joinedOnce) return;
		if (tokenExpired(tokenClaims(this.token))) {
			return this.giveUp('Your access token has expired: reload the page (or ask for a new link).');
		}
		const reachable = await fetch('/api/health', { cache: 'no-store' }).then(() => true, () => false);
		if (!reachable) {
			this.emit('failure', { message: 'The server cannot be reached: retrying…' });
			return;
		}
		this.giveUp('The server refused the connection: your link or sign-in may not allow this room, or the room is not available.');
	}

	/** A request of the join sequence failed (room full, not allowed, no media worker...). */
	joinFailed(error) {
		if (this.joinedOnce) return this.fail(error);
		const reason = error?.message || String(error);
		const full = /full|too many/i.test(reason);
		this.giveUp(full ? 'The room is full.' : `Could not join the meeting: ${reason}`);
	}

	giveUp(reason) {
		if (this.closed) return;
		this.closed = true;
		this.protoo?.close();
		this.dropMedia();
		this.setState('closed', reason);
	}

	fail(error) {
		console.error('parley:', error);
		this.emit('failure', { message: error?.message || String(error) });
	}

	request(method, data = {}) {
		return this.protoo.request(method, data);
	}

	// -- joining ------------------------------------------------------------------------

	async onOpen() {
		// A first connection or a reconnection: either way the server expects a (re-)join
		// on new transports; what the old connection made is dropped on both sides.
		this.dropMedia();
		if (!this.device) {
			const routerRtpCapabilities = await this.request('getRouterRtpCapabilities');
			this.device = new Device();
			await this.device.load({ routerRtpCapabilities });
		}
		this.recvTransport = await this.createTransport('recv');
		this.sendTransport = this.device.canProduce('video') || this.device.canProduce('audio') ? await this.createTransport('send') : null;
		const { peers } = await this.request('join', {
			displayName: this.displayName,
			device: { flag: 'parley-web', name: navigator.userAgent.includes('Firefox') ? 'Firefox' : 'Chrome', version: '' },
			rtpCapabilities: this.device.rtpCapabilities,
			sctpCapabilities: this.device.sctpCapabilities,
		});
		const present = new Set(peers.map((peer) => peer.id));
		for (const peerId of [...this.peers.keys()]) {
			if (!present.has(peerId)) this.removePeer(peerId);
		}
		for (const peer of peers) this.addPeer(peer);
		this.joinedOnce = true;
		this.setState('joined');
		for (const [kind, { track, paused }] of this.tracks) {
			await this.publish(kind, track, paused).catch((error) => this.fail(error));
		}
		if (this.tracks.has('share')) await this.publish('share', this.tracks.get('share').track, false).catch(() => {});
	}

	async createTransport(direction) {
		const producing = direction === 'send';
		const info = await this.request('createWebRtcTransport', {
			forceTcp: false,
			producing,
			consuming: !producing,
			sctpCapabilities: this.device.sctpCapabilities,
		});
		const options = {
			id: info.id,
			iceParameters: info.iceParameters,
			iceCandidates: info.iceCandidates,
			dtlsParameters: info.dtlsParameters,
			sctpParameters: info.sctpParameters,
			iceServers: [],
		};
		const transport = producing ? this.device.createSendTransport(options) : this.device.createRecvTransport(options);
		transport.on('connect', ({ dtlsParameters }, callback, errback) => {
			this.request('connectWebRtcTransport', { transportId: transport.id, dtlsParameters }).then(callback).catch(errback);
		});
		if (producing) {
			transport.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
				this.request('produce', { transportId: transport.id, kind, rtpParameters, appData })
					.then(({ id }) => callback({ id }))
					.catch(errback);
			});
		}
		transport.on('connectionstatechange', (state) => {
			if (state === 'disconnected' || state === 'failed') this.restartIce(transport, state);
		});
		return transport;
	}

	/** The network changed under a transport: new ICE credentials, same transport. */
	async restartIce(transport, state) {
		if (transport.closed || this.state !== 'joined') return;
		if (state === 'disconnected') {
			// Often a short blip: give ICE two seconds to recover by itself.
			await new Promise((resolve) => setTimeout(resolve, 2000));
			if (transport.closed || transport.connectionState !== 'disconnected') return;
		}
		try {
			const iceParameters = await this.request('restartIce', { transportId: transport.id });
			await transport.restartIce({ iceParameters });
		} catch (error) {
			console.warn('parley: ICE restart failed', error);
		}
	}

	/** Forget every transport, producer and consumer (the server drops its side on re-join). */
	dropMedia() {
		for (const consumer of [...this.consumers.values()]) this.consumerGone(consumer);
		for (const [key, producer] of [...this.producers]) {
			this.producers.delete(key);
			producer.close();
			this.emit('producer', { producer, key });
		}
		this.sendTransport?.close();
		this.recvTransport?.close();
		this.sendTransport = this.recvTransport = null;
	}

	// -- publishing ---------------------------------------------------------------------

	/** Produce `track` as `key` ('audio', 'video' or 'share'). */
	async publish(key, track, paused = false) {
		if (!this.sendTransport || track.readyState === 'ended') return;
		// stopTracks false: the track outlives its producer (a reconnection produces it again).
		const options = { track, stopTracks: false, appData: { source: { audio: 'mic', video: 'webcam', share: 'share' }[key] } };
		if (key === 'video') {
			options.encodings = WEBCAM_ENCODINGS;
			options.codecOptions = { videoGoogleStartBitrate: 1000 };
		}
		if (key === 'audio') options.codecOptions = { opusStereo: false, opusDtx: true, opusFec: true };
		const producer = await this.sendTransport.produce(options);
		this.producers.set(key, producer);
		producer.on('trackended', () => this.unpublish(key));
		if (paused) await this.pauseProducer(key, true);
		this.emit('producer', { producer, key });
	}

	async unpublish(key) {
		const producer = this.producers.get(key);
		this.tracks.get(key)?.track.stop();
		this.tracks.delete(key);
		if (!producer) return;
		this.producers.delete(key);
		producer.close();
		this.emit('producer', { producer, key });
		if (this.state === 'joined') await this.request('closeProducer', { producerId: producer.id }).catch(() => {});
	}

	/** Mute (pause) or unmute (resume) the microphone ('audio') or camera ('video'). */
	async pauseProducer(key, paused) {
		const entry = this.tracks.get(key);
		if (entry) entry.paused = paused;
		const producer = this.producers.get(key);
		if (!producer) return;
		if (paused) producer.pause();
		else producer.resume();
		await this.request(paused ? 'pauseProducer' : 'resumeProducer', { producerId: producer.id });
		this.emit('producer', { producer, key });
	}

	isPaused(key) {
		return Boolean(this.tracks.get(key)?.paused);
	}

	/** Replace the camera or microphone track (device picker during the call). */
	async replaceTrack(key, track) {
		const entry = this.tracks.get(key);
		const old = entry?.track;
		this.tracks.set(key, { track, paused: entry?.paused || false });
		const producer = this.producers.get(key);
		if (producer) await producer.replaceTrack({ track });
		else if (this.state === 'joined') await this.publish(key, track, entry?.paused);
		old?.stop();
	}

	/** Start sharing a screen (the browser asks which). */
	async shareScreen() {
		const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 15 }, audio: false });
		const track = stream.getVideoTracks()[0];
		this.tracks.set('share', { track, paused: false });
		track.addEventListener('ended', () => this.unpublish('share'));
		await this.publish('share', track);
	}

	// -- consuming ----------------------------------------------------------------------

	async onRequest(request, accept, reject) {
		if (request.method === 'newConsumer') {
			if (!this.recvTransport) return reject(503, 'not ready');
			const { peerId, producerId, id, kind, rtpParameters, type, appData, producerPaused } = request.data;
			const pending = { producerPaused, closed: false };
			this.pendingConsumers.set(id, pending);
			try {
				const consumer = await this.recvTransport.consume({
					id,
					producerId,
					kind,
					rtpParameters,
					streamId: `${peerId}-${appData?.source === 'share' ? 'share' : 'cam'}`,
					appData: { ...appData, peerId, type },
				});
				// What the notifications said meanwhile wins over the request's snapshot.
				consumer.appData.producerPaused = pending.producerPaused;
				this.consumers.set(consumer.id, consumer);
				consumer.on('transportclose', () => this.consumerGone(consumer));
				accept();
				this.emit('consumer', { consumer, peerId });
				if (pending.closed) this.consumerGone(consumer);
			} catch (error) {
				reject(500, String(error));
			} finally {
				this.pendingConsumers.delete(id);
			}
			return;
		}
		if (request.method === 'newDataConsumer') return reject(403, 'this client does not use data channels');
		reject(404, `unknown method ${request.method}`);
	}

	consumerGone(consumer) {
		if (!this.consumers.delete(consumer.id)) return;
		consumer.close();
		this.emit('consumerclosed', { consumer, peerId: consumer.appData.peerId });
	}

	/** Pause or resume receiving a consumer (a hidden tile), on both sides. */
	async setConsumerPaused(consumer, paused) {
		if (consumer.closed || consumer.paused === paused) return;
		if (paused) consumer.pause();
		else consumer.resume();
		await this.request(paused ? 'pauseConsumer' : 'resumeConsumer', { consumerId: consumer.id }).catch(() => {});
	}

	/** Ask for the simulcast layer that fits the tile (0 = smallest). */
	async setPreferredLayer(consumer, spatialLayer) {
		if (consumer.closed || consumer.appData.preferredLayer === spatialLayer) return;
		consumer.appData.preferredLayer = spatialLayer;
		await this.request('setConsumerPreferredLayers', { consumerId: consumer.id, spatialLayer, temporalLayer: 2 }).catch(() => {});
	}

	// -- notifications ------------------------------------------------------------------

	onNotification({ method, data }) {
		switch (method) {
			case 'newPeer':
				this.addPeer(data);
				break;
			case 'peerClosed':
				this.removePeer(data.peerId);
				break;
			case 'peerDisplayNameChanged': {
				const peer = this.peers.get(data.peerId);
				if (peer) {
					peer.displayName = data.displayName;
					this.emit('peer', { peer });
				}
				break;
			}
			case 'consumerClosed': {
				const consumer = this.consumers.get(data.consumerId);
				if (consumer) this.consumerGone(consumer);
				else if (this.pendingConsumers.has(data.consumerId)) this.pendingConsumers.get(data.consumerId).closed = true;
				break;
			}
			case 'consumerPaused':
			case 'consumerResumed': {
				const consumer = this.consumers.get(data.consumerId);
				const pending = this.pendingConsumers.get(data.consumerId);
				if (!consumer && pending) pending.producerPaused = method === 'consumerPaused';
				if (!consumer) break;
				consumer.appData.producerPaused = method === 'consumerPaused';
				this.emit('consumerpause', { consumer, peerId: consumer.appData.peerId, paused: consumer.appData.producerPaused });
				break;
			}
			case 'activeSpeaker':
				this.emit('speaker', { peerId: data.peerId });
				break;
			case 'chatMessage':
				this.addMessage(data.message);
				break;
			case 'recordingStarted':
				this.setRecording(true, data.peerId);
				break;
			case 'recordingStopped':
				this.setRecording(false);
				break;
			case 'recordingError':
				this.emit('failure', { message: `Recording problem: ${data.error}` });
				break;
			default:
				break;
		}
	}

	addPeer(peer) {
		const known = this.peers.get(peer.id);
		const entry = { id: peer.id, displayName: peer.displayName || peer.id };
		if (known && known.displayName === entry.displayName) return;
		this.peers.set(peer.id, entry);
		this.emit('peer', { peer: entry });
	}

	removePeer(peerId) {
		if (!this.peers.delete(peerId)) return;
		for (const consumer of [...this.consumers.values()]) {
			if (consumer.appData.peerId === peerId) this.consumerGone(consumer);
		}
		this.emit('peerclosed', { peerId });
	}

	// -- chat and recording -------------------------------------------------------------

	addMessage(message) {
		if (!message || this.seenMessages.has(message.id)) return false;
		this.seenMessages.add(message.id);
		this.emit('chat', { message });
		return true;
	}

	sendChat(text) {
		return this.request('chatMessage', { type: 'text', text });
	}

	/** One page of history, older than `before` (null: the newest): `{messages, nextCursor}`. */
	async chatHistory(before = null, limit = 30) {
		const page = await this.request('getChatHistory', before ? { limit, before } : { limit });
		if (!before) {
			// The newest system message about recording tells a late joiner whether one runs.
			const last = page.messages.find((m) => m.event === 'recording.started' || m.event === 'recording.stopped');
			if (last && last.event === 'recording.started' && !this.recording) this.setRecording(true);
		}
		return page;
	}

	setRecording(active, by) {
		this.recording = active;
		this.emit('recording', { active, by });
	}

	startRecording() {
		return this.request('startRecording', {});
	}

	stopRecording() {
		return this.request('stopRecording', {});
	}

	// -- for tests and diagnostics --------------------------------------------------------

	/** Per remote video/audio consumer: `{peerId, kind, source, framesDecoded, bytesReceived}` from getStats. */
	async inboundStats() {
		const rows = [];
		for (const consumer of this.consumers.values()) {
			const row = {
				peerId: consumer.appData.peerId,
				kind: consumer.kind,
				source: consumer.appData.source,
				type: consumer.appData.type,
				preferredLayer: consumer.appData.preferredLayer ?? null,
				paused: consumer.paused,
				framesDecoded: 0,
				bytesReceived: 0,
				frameHeight: 0,
			};
			const stats = await consumer.getStats().catch(() => new Map());
			for (const report of stats.values()) {
				if (report.type === 'inbound-rtp') {
					row.framesDecoded += report.framesDecoded || 0;
					row.bytesReceived += report.bytesReceived || 0;
					row.frameHeight = report.frameHeight || row.frameHeight;
				}
			}
			rows.push(row);
		}
		return rows;
	}
}
