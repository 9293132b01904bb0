// The meeting view: a grid of tiles, the control bar, chat and participant panels.
// It listens to RoomClient's events and calls its methods; the DOM is the only state
// it keeps besides a few maps from ids to elements.
import { RoomClient } from './client.js';
import { formatTime, h, hueOf, initials } from './dom.js';
import { icon } from './icons.js';

const LEVEL_INTERVAL_MS = 200;
/** Tile height (device pixels) from which each simulcast layer is worth receiving. */
const LAYER_HEIGHTS = [0, 150, 300];

export class Meeting {
	constructor(root, { roomId, peerId, displayName, token, claims, media, choices, timings, openMedia }) {
		this.root = root;
		this.roomId = roomId;
		this.displayName = displayName;
		this.media = media;
		this.choices = choices;
		this.timings = timings;
		this.openMedia = openMedia;
		this.canRecord = Boolean(claims?.video?.roomRecord || claims?.video?.roomAdmin);
		this.client = new RoomClient({ roomId, peerId, displayName, token });
		/** @type {Map<string, {el: HTMLElement, video: HTMLVideoElement, consumer?: any, audio?: any}>} key `${peerId}:cam|share` */
		this.tiles = new Map();
		this.audioEls = new Map();
		this.nextCursor = null;
		this.historyLoaded = false;
		this.unread = 0;
		this.panel = null;
		this.speaker = null;
		this.build();
		this.listen();
	}

	// -- layout -------------------------------------------------------------------------

	build() {
		const button = (id, label, glyph, onclick, extra = {}) =>
			h('button', { id, class: 'control', type: 'button', title: label, 'aria-label': label, onclick, ...extra }, icon(glyph), h('span', { class: 'label' }, label));
		this.micButton = button('mic', 'Microphone', 'mic', () => this.toggle('audio'), { 'aria-pressed': 'true' });
		this.camButton = button('cam', 'Camera', 'cam', () => this.toggle('video'), { 'aria-pressed': 'true' });
		this.shareButton = button('share', 'Share screen', 'screen', () => this.toggleShare(), { 'aria-pressed': 'false', hidden: !navigator.mediaDevices?.getDisplayMedia });
		this.recordButton = button('record', 'Record', 'record', () => this.toggleRecording(), { 'aria-pressed': 'false', hidden: !this.canRecord });
		this.chatButton = button('chat-toggle', 'Chat', 'chat', () => this.showPanel('chat'), { 'aria-expanded': 'false', 'aria-controls': 'side' });
		this.peopleButton = button('people-toggle', 'People', 'people', () => this.showPanel('people'), { 'aria-expanded': 'false', 'aria-controls': 'side' });
		this.leaveButton = button('leave', 'Leave', 'leave', () => this.client.leave(), { class: 'control danger' });
		this.unreadBadge = h('span', { class: 'badge', hidden: true });
		this.chatButton.append(this.unreadBadge);

		this.grid = h('div', { class: 'grid', id: 'grid', role: 'list', 'aria-label': 'Participants' });
		this.stateBanner = h('div', { class: 'banner', role: 'status', hidden: true });
		this.recIndicator = h('span', { class: 'rec', id: 'rec-indicator', hidden: true, role: 'status' }, '● Recording');
		this.countLabel = h('span', { class: 'count' });
		this.toast = h('div', { class: 'toast', role: 'alert', hidden: true });

		this.messages = h('ol', { class: 'messages', id: 'messages', 'aria-label': 'Chat messages', tabindex: '0' });
		this.moreButton = h('button', { class: 'more', type: 'button', hidden: true, onclick: () => this.loadHistory() }, 'Load earlier messages');
		this.chatInput = h('input', { id: 'chat-input', 'aria-label': 'Message', placeholder: 'Message everyone', maxlength: 4000, autocomplete: 'off' });
		this.chatForm = h('form', { class: 'chat-form', onsubmit: (e) => { e.preventDefault(); this.sendChat(); } }, this.chatInput, h('button', { type: 'submit', class: 'primary' }, 'Send'));
		this.chatPane = h('section', { class: 'pane', id: 'chat-pane', 'aria-label': 'Chat' }, this.moreButton, this.messages, this.chatForm);
		this.peopleList = h('ul', { class: 'people', id: 'people' });
		this.peoplePane = h('section', { class: 'pane', id: 'people-pane', 'aria-label': 'People', hidden: true }, this.peopleList);
		this.side = h('aside', { class: 'side', id: 'side', hidden: true },
			h('div', { class: 'side-head' }, h('h2', { id: 'side-title' }, 'Chat'), h('button', { type: 'button', class: 'close', 'aria-label': 'Close panel', onclick: () => this.showPanel(null) }, '✕')),
			this.chatPane, this.peoplePane);
		this.messages.addEventListener('scroll', () => { if (this.messages.scrollTop < 40 && this.nextCursor) this.loadHistory(); });

		this.el = h('div', { class: 'meeting' },
			h('header', { class: 'topbar' }, h('h1', {}, this.roomId), this.recIndicator, this.countLabel),
			this.stateBanner,
			h('div', { class: 'body' }, h('main', { class: 'stage' }, this.grid), this.side),
			h('footer', { class: 'controls', role: 'toolbar', 'aria-label': 'Meeting controls' },
				this.micButton, this.camButton, this.shareButton, this.recordButton, this.chatButton, this.peopleButton, this.leaveButton),
			this.toast);
		this.root.replaceChildren(this.el);
		document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && this.panel) this.showPanel(null); });

		this.visibility = new IntersectionObserver((entries) => {
			for (const entry of entries) this.tileVisible(entry.target, entry.isIntersecting);
		});
		this.sizes = new ResizeObserver((entries) => {
			for (const entry of entries) this.fitLayer(entry.target);
		});
		this.levelTimer = setInterval(() => this.updateLevels(), LEVEL_INTERVAL_MS);
	}

	start() {
		const tracks = {};
		if (this.media) {
			tracks.audio = this.media.getAudioTracks()[0];
			tracks.video = this.media.getVideoTracks()[0];
		}
		this.addTile(this.client.peerId, 'cam', `${this.displayName} (you)`, true);
		const local = this.tiles.get(`${this.client.peerId}:cam`);
		if (tracks.video) local.video.srcObject = new MediaStream([tracks.video]);
		this.client.join({ ...tracks, micMuted: this.choices.micOn === false, camMuted: this.choices.camOn === false });
		this.refreshControls();
	}

	// -- events from the client -----------------------------------------------------------

	listen() {
		const on = (type, fn) => this.client.addEventListener(type, (e) => fn(e.detail));
		on('state', ({ state, reason }) => this.onState(state, reason));
		on('peer', ({ peer }) => this.onPeer(peer));
		on('peerclosed', ({ peerId }) => this.onPeerClosed(peerId));
		on('consumer', ({ consumer, peerId }) => this.onConsumer(consumer, peerId));
		on('consumerclosed', ({ consumer, peerId }) => this.onConsumerClosed(consumer, peerId));
		on('consumerpause', ({ peerId, consumer }) => this.refreshTile(peerId, slotOf(consumer)));
		on('producer', () => this.refreshControls());
		on('speaker', ({ peerId }) => this.onSpeaker(peerId));
		on('chat', ({ message }) => this.onChat(message));
		on('recording', ({ active }) => this.onRecording(active));
		on('failure', ({ message }) => this.notify(message));
	}

	onState(state, reason) {
		(this.timings.states ??= []).push(state);
		if (state === 'joined') {
			this.timings.joined ??= performance.now();
			this.timings.joinedAt ??= performance.timeOrigin + this.timings.joined;
			this.stateBanner.hidden = true;
			if (!this.historyLoaded) this.loadHistory();
		} else if (state === 'reconnecting') {
			this.stateBanner.textContent = 'Connection lost: reconnecting…';
			this.stateBanner.hidden = false;
		} else if (state === 'connecting') {
			this.stateBanner.textContent = 'Connecting…';
			this.stateBanner.hidden = false;
		} else if (state === 'closed') {
			this.close(reason);
		}
		this.el.dataset.state = state;
	}

	onPeer(peer) {
		const tile = this.tiles.get(`${peer.id}:cam`);
		if (tile) tile.el.querySelector('.name').textContent = peer.displayName;
		else this.addTile(peer.id, 'cam', peer.displayName, false);
		this.refreshPeople();
	}

	onPeerClosed(peerId) {
		for (const slot of ['cam', 'share']) this.removeTile(`${peerId}:${slot}`);
		this.refreshPeople();
	}

	onConsumer(consumer, peerId) {
		const slot = slotOf(consumer);
		if (consumer.kind === 'audio') {
			const audio = h('audio', { autoplay: true });
			audio.srcObject = new MediaStream([consumer.track]);
			this.audioEls.set(consumer.id, audio);
			this.el.append(audio);
			audio.play().catch(() => this.askForSound());
			const tile = this.tiles.get(`${peerId}:cam`);
			if (tile) tile.audio = consumer;
			this.refreshTile(peerId, 'cam');
			return;
		}
		const peer = this.client.peers.get(peerId);
		if (!this.tiles.has(`${peerId}:${slot}`)) this.addTile(peerId, slot, slot === 'share' ? `${peer?.displayName || peerId} (screen)` : peer?.displayName || peerId, false);
		const tile = this.tiles.get(`${peerId}:${slot}`);
		tile.consumer = consumer;
		if (tile.visible === false) this.client.setConsumerPaused(consumer, true);
		tile.video.srcObject = new MediaStream([consumer.track]);
		this.watchFirstFrame(tile.video, peerId);
		this.refreshTile(peerId, slot);
		this.fitLayer(tile.el);
	}

	onConsumerClosed(consumer, peerId) {
		const audio = this.audioEls.get(consumer.id);
		if (audio) {
			audio.remove();
			this.audioEls.delete(consumer.id);
		}
		for (const [key, tile] of this.tiles) {
			if (tile.audio === consumer) tile.audio = undefined;
			if (tile.consumer === consumer) {
				tile.consumer = undefined;
				tile.video.srcObject = null;
				if (key.endsWith(':share')) this.removeTile(key);
			}
		}
		this.refreshTile(peerId, 'cam');
	}

	onSpeaker(peerId) {
		this.speaker = peerId;
		for (const [key, tile] of this.tiles) tile.el.classList.toggle('speaking', peerId !== null && key === `${peerId}:cam`);
	}

	onRecording(active) {
		this.recIndicator.hidden = !active;
		this.recordButton.setAttribute('aria-pressed', String(active));
		this.recordButton.querySelector('.label').textContent = active ? 'Stop recording' : 'Record';
	}

	// -- tiles ----------------------------------------------------------------------------

	addTile(peerId, slot, name, local) {
		const key = `${peerId}:${slot}`;
		const video = h('video', { autoplay: true, muted: true, playsInline: true });
		const el = h('div', { class: `tile ${local ? 'local' : ''} ${slot === 'share' ? 'share' : ''}`, role: 'listitem', 'data-peer-id': peerId, 'data-slot': slot, 'data-key': key },
			video,
			h('div', { class: 'namecard', 'aria-hidden': 'true', style: `--hue:${hueOf(peerId)}` }, h('span', {}, initials(name.replace(/ \((you|screen)\)$/, '')))),
			h('div', { class: 'caption' },
				h('span', { class: 'muted-icon', title: 'Microphone off', hidden: true }, icon('micoff')),
				h('span', { class: 'name' }, name),
				h('span', { class: 'level', 'aria-hidden': 'true' }, h('span', {}))));
		this.tiles.set(key, { el, video, local });
		this.grid.append(el);
		this.visibility.observe(el);
		this.sizes.observe(el);
		this.layoutGrid();
		this.refreshTile(peerId, slot);
		this.refreshPeople();
	}

	removeTile(key) {
		const tile = this.tiles.get(key);
		if (!tile) return;
		this.visibility.unobserve(tile.el);
		this.sizes.unobserve(tile.el);
		tile.el.remove();
		this.tiles.delete(key);
		this.layoutGrid();
	}

	/** Name card instead of video when there is none or it is paused; mic-off icon. */
	refreshTile(peerId, slot) {
		const tile = this.tiles.get(`${peerId}:${slot}`);
		if (!tile) return;
		let videoOn;
		let micOff;
		if (tile.local) {
			videoOn = this.client.tracks.has('video') && !this.client.isPaused('video');
			micOff = !this.client.tracks.has('audio') || this.client.isPaused('audio');
		} else {
			videoOn = Boolean(tile.consumer && !tile.consumer.appData.producerPaused);
			micOff = slot === 'cam' && (!tile.audio || tile.audio.appData.producerPaused);
		}
		tile.el.classList.toggle('video-off', !videoOn);
		tile.el.querySelector('.muted-icon').hidden = !micOff;
	}

	layoutGrid() {
		const n = Math.max(1, this.tiles.size);
		const cols = Math.ceil(Math.sqrt(n));
		this.grid.style.setProperty('--cols', String(cols));
		this.grid.style.setProperty('--rows', String(Math.ceil(n / cols)));
		this.countLabel.textContent = `${this.client.peers.size + 1} in the meeting`;
	}

	tileVisible(el, visible) {
		const tile = this.tiles.get(el.dataset.key);
		if (!tile || tile.local) return;
		tile.visible = visible;
		if (tile.consumer) this.client.setConsumerPaused(tile.consumer, !visible);
	}

	/** Receive the simulcast layer the tile can show. */
	fitLayer(el) {
		const tile = this.tiles.get(el.dataset.key);
		const consumer = tile?.consumer;
		if (!consumer || consumer.appData.type !== 'simulcast') return;
		const height = el.clientHeight * (window.devicePixelRatio || 1);
		let layer = 0;
		LAYER_HEIGHTS.forEach((min, i) => { if (height >= min) layer = i; });
		this.client.setPreferredLayer(consumer, layer);
	}

	/** Timings for tests: the first remote frame overall, and per sender (epoch ms). */
	watchFirstFrame(video, peerId) {
		const mark = () => {
			this.timings.firstRemoteFrame ??= performance.now();
			this.timings.firstFrameFrom ??= {};
			this.timings.firstFrameFrom[peerId] ??= performance.timeOrigin + performance.now();
		};
		// Whichever comes first: a frame painted, or a frame decoded (a tab in the
		// background decodes without painting).
		if ('requestVideoFrameCallback' in video) video.requestVideoFrameCallback(mark);
		video.addEventListener('loadeddata', mark, { once: true });
	}

	async updateLevels() {
		for (const tile of this.tiles.values()) {
			let level = 0;
			if (tile.local) {
				const producer = this.client.producers.get('audio');
				if (producer && !producer.paused) {
					const stats = await producer.getStats().catch(() => new Map());
					for (const report of stats.values()) if (report.type === 'media-source' && report.audioLevel !== undefined) level = report.audioLevel;
				}
			} else if (tile.audio && !tile.audio.paused) {
				const source = tile.audio.rtpReceiver?.getSynchronizationSources?.()[0];
				level = source?.audioLevel || 0;
			}
			// audioLevel is linear 0..1; a square root makes speech visible.
			tile.el.style.setProperty('--level', Math.min(1, Math.sqrt(level) * 1.4).toFixed(2));
		}
	}

	askForSound() {
		if (this.soundButton) return;
		this.soundButton = h('button', { class: 'primary sound', type: 'button', onclick: () => {
			for (const audio of this.audioEls.values()) audio.play().catch(() => {});
			this.soundButton.remove();
			this.soundButton = null;
		} }, 'Click to hear the others');
		this.el.append(this.soundButton);
	}

	// -- controls -------------------------------------------------------------------------

	async toggle(kind) {
		try {
			if (!this.client.tracks.has(kind)) {
				const stream = await this.openMedia({ audio: kind === 'audio', video: kind === 'video' });
				const track = kind === 'audio' ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
				await this.client.replaceTrack(kind, track);
				if (kind === 'video') this.tiles.get(`${this.client.peerId}:cam`).video.srcObject = new MediaStream([track]);
			} else {
				await this.client.pauseProducer(kind, !this.client.isPaused(kind));
			}
		} catch (error) {
			this.notify(error.message);
		}
		this.refreshControls();
	}

	async toggleShare() {
		try {
			if (this.client.producers.has('share')) await this.client.unpublish('share');
			else await this.client.shareScreen();
		} catch (error) {
			if (error.name !== 'NotAllowedError') this.notify(`Screen sharing failed: ${error.message}`);
		}
		this.refreshControls();
	}

	async toggleRecording() {
		this.recordButton.disabled = true;
		try {
			if (this.client.recording) await this.client.stopRecording();
			else await this.client.startRecording();
		} catch (error) {
			this.notify(`Recording: ${error.message}`);
		}
		this.recordButton.disabled = false;
	}

	refreshControls() {
		for (const [kind, button, on, off] of [['audio', this.micButton, 'Mute', 'Unmute'], ['video', this.camButton, 'Stop camera', 'Start camera']]) {
			const active = this.client.tracks.has(kind) && !this.client.isPaused(kind);
			button.setAttribute('aria-pressed', String(active));
			button.classList.toggle('off', !active);
			button.querySelector('.label').textContent = active ? on : off;
			button.title = active ? on : off;
			button.setAttribute('aria-label', active ? on : off);
		}
		const sharing = this.client.producers.has('share');
		this.shareButton.setAttribute('aria-pressed', String(sharing));
		this.shareButton.querySelector('.label').textContent = sharing ? 'Stop sharing' : 'Share screen';
		this.refreshTile(this.client.peerId, 'cam');
	}

	showPanel(which) {
		this.panel = this.panel === which ? null : which;
		this.side.hidden = this.panel === null;
		this.chatPane.hidden = this.panel !== 'chat';
		this.peoplePane.hidden = this.panel !== 'people';
		this.chatButton.setAttribute('aria-expanded', String(this.panel === 'chat'));
		this.peopleButton.setAttribute('aria-expanded', String(this.panel === 'people'));
		this.side.querySelector('#side-title').textContent = this.panel === 'people' ? 'People' : 'Chat';
		if (this.panel === 'chat') {
			this.unread = 0;
			this.unreadBadge.hidden = true;
			this.messages.scrollTop = this.messages.scrollHeight;
			this.chatInput.focus();
		}
		if (this.panel === 'people') this.refreshPeople();
	}

	refreshPeople() {
		const rows = [[this.client.peerId, `${this.displayName} (you)`], ...[...this.client.peers.values()].map((p) => [p.id, p.displayName])];
		this.peopleList.replaceChildren(...rows.map(([id, name]) => h('li', { 'data-peer-id': id }, h('span', { class: 'dot', style: `--hue:${hueOf(id)}` }), name)));
		this.layoutGrid();
	}

	// -- chat -----------------------------------------------------------------------------

	async loadHistory() {
		if (this.loadingHistory || this.client.state !== 'joined') return;
		this.loadingHistory = true;
		try {
			const page = await this.client.chatHistory(this.historyLoaded ? this.nextCursor : null);
			const atBottom = !this.historyLoaded;
			const oldHeight = this.messages.scrollHeight;
			// Newest first: prepend one by one, so the oldest ends on top.
			for (const message of page.messages) {
				if (!this.client.seenMessages.has(message.id)) {
					this.client.seenMessages.add(message.id);
					this.messages.prepend(this.messageEl(message));
				}
			}
			this.historyLoaded = true;
			this.nextCursor = page.nextCursor || null;
			this.moreButton.hidden = !this.nextCursor;
			if (atBottom) this.messages.scrollTop = this.messages.scrollHeight;
			else this.messages.scrollTop += this.messages.scrollHeight - oldHeight;
		} catch (error) {
			this.notify(`Chat history: ${error.message}`);
		} finally {
			this.loadingHistory = false;
		}
	}

	onChat(message) {
		const stick = this.messages.scrollTop + this.messages.clientHeight >= this.messages.scrollHeight - 30;
		this.messages.append(this.messageEl(message));
		if (stick) this.messages.scrollTop = this.messages.scrollHeight;
		if (this.panel !== 'chat' && message.type !== 'system') {
			this.unread += 1;
			this.unreadBadge.textContent = String(this.unread);
			this.unreadBadge.hidden = false;
		}
	}

	messageEl(message) {
		const time = h('time', { datetime: message.createdAt }, formatTime(message.createdAt));
		if (message.type === 'system') return h('li', { class: 'message system', 'data-id': message.id }, time, ' ', message.text);
		const mine = message.sender?.peerId === this.client.peerId;
		const body = message.type === 'file' ? `[file] ${message.file?.name || 'file'}${message.text ? ` — ${message.text}` : ''}` : message.text;
		return h('li', { class: `message ${mine ? 'mine' : ''}`, 'data-id': message.id },
			h('div', { class: 'meta' }, h('strong', {}, message.sender?.displayName || message.sender?.peerId || '?'), ' ', time),
			h('div', { class: 'text' }, body));
	}

	async sendChat() {
		const text = this.chatInput.value.trim();
		if (!text) return;
		this.chatInput.value = '';
		try {
			const { message } = await this.client.sendChat(text);
			this.client.addMessage(message);
		} catch (error) {
			this.chatInput.value = text;
			this.notify(`Message not sent: ${error.message}`);
		}
	}

	// -- the end --------------------------------------------------------------------------

	notify(message) {
		this.toast.textContent = message;
		this.toast.hidden = false;
		clearTimeout(this.toastTimer);
		this.toastTimer = setTimeout(() => { this.toast.hidden = true; }, 6000);
	}

	close(reason) {
		clearInterval(this.levelTimer);
		this.visibility.disconnect();
		this.sizes.disconnect();
		this.media?.getTracks().forEach((t) => t.stop());
		this.root.replaceChildren(h('main', { class: 'center' },
			h('div', { class: 'panel', id: 'left' },
				h('h1', {}, reason || 'The meeting ended.'),
				h('button', { class: 'primary', type: 'button', onclick: () => location.reload() }, 'Rejoin'),
				h('p', {}, h('a', { href: '/' }, 'Start page')))));
	}
}

function slotOf(consumer) {
	return consumer.appData.source === 'share' ? 'share' : 'cam';
}
