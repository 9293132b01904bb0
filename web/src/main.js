// The meeting page: `/` (pick a room), `/r/<roomId>` (lobby, then the meeting).
//
// Automation contract (tests and bookmarks rely on it):
//   /r/<roomId>?name=<displayName>&autojoin=1[&token=<JWT>]
// joins at once with the default devices; without a token the page asks GET /api/token.
import { fetchToken, tokenClaims, tokenExpired, UserError, whoAmI } from './api.js';
import { h } from './dom.js';
import { Meeting } from './meeting.js';

const ROOM_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const app = document.getElementById('app');
const params = new URLSearchParams(location.search);

/** Timings for tests and diagnostics: performance.now() marks. */
const timings = { start: performance.now() };
window.parley = { timings, client: null, meeting: null };

function roomFromPath() {
	const match = location.pathname.match(/^\/r\/([^/]+)\/?$/);
	return match ? decodeURIComponent(match[1]) : null;
}

function randomRoom() {
	const bytes = crypto.getRandomValues(new Uint8Array(5));
	return Array.from(bytes, (b) => 'abcdefghjkmnpqrstuvwxyz23456789'[b % 31]).join('');
}

function showError(message, retry, signIn = false) {
	const next = encodeURIComponent(location.pathname + location.search);
	app.replaceChildren(
		h('main', { class: 'panel error-panel', role: 'alert' },
			h('h1', {}, 'Something went wrong'),
			h('p', {}, message),
			signIn ? h('p', {}, h('a', { class: 'button', href: `/auth/login?next=${next}` }, 'Sign in with Google')) : null,
			retry ? h('button', { class: 'primary', onclick: retry }, 'Try again') : null,
			h('p', {}, h('a', { href: '/' }, 'Back to the start page'))),
	);
}

/** The start page: choose (or invent) a room name. */
function home() {
	const input = h('input', { id: 'room', name: 'room', required: true, pattern: ROOM_RE.source, value: randomRoom(), autocomplete: 'off', 'aria-describedby': 'room-rule' });
	const form = h('form', { class: 'panel', onsubmit: (e) => { e.preventDefault(); location.assign(`/r/${encodeURIComponent(input.value.trim())}`); } },
		h('h1', {}, 'Parley'),
		h('p', {}, 'Start a meeting or join one by its name.'),
		h('label', { for: 'room' }, 'Room name'),
		input,
		h('p', { id: 'room-rule', class: 'hint' }, 'Letters, digits, "-" and "_"; share the link with the others.'),
		h('button', { class: 'primary', type: 'submit' }, 'Continue'));
	app.replaceChildren(h('main', { class: 'center' }, form));
	input.focus();
	input.select();
}

/** Camera and microphone for the lobby preview or an automatic join. */
async function openMedia({ audioDeviceId, videoDeviceId, audio = true, video = true } = {}) {
	const constraints = {
		audio: audio ? { deviceId: audioDeviceId ? { exact: audioDeviceId } : undefined, echoCancellation: true, noiseSuppression: true } : false,
		video: video ? { deviceId: videoDeviceId ? { exact: videoDeviceId } : undefined, width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 24 } } : false,
	};
	if (!constraints.audio && !constraints.video) return new MediaStream();
	try {
		return await navigator.mediaDevices.getUserMedia(constraints);
	} catch (error) {
		if (video && audio) {
			// One of the two may be missing or refused: try each alone before giving up.
			const tracks = [];
			for (const kind of ['audio', 'video']) {
				const stream = await navigator.mediaDevices.getUserMedia({ [kind]: constraints[kind] }).catch(() => null);
				if (stream) tracks.push(...stream.getTracks());
			}
			if (tracks.length) return new MediaStream(tracks);
		}
		throw mediaError(error);
	}
}

function mediaError(error) {
	const name = error?.name || '';
	if (name === 'NotAllowedError' || name === 'SecurityError') {
		return new UserError(window.isSecureContext
			? 'Camera and microphone access was denied. Allow it in the browser (the icon in the address bar), or join without them.'
			: 'The browser allows cameras only on https:// pages (or localhost). Ask the operator to enable TLS.', 'media_denied');
	}
	if (name === 'NotFoundError' || name === 'OverconstrainedError') return new UserError('No camera or microphone was found. You can still join without them.', 'media_missing');
	if (name === 'NotReadableError') return new UserError('The camera or microphone is in use by another program.', 'media_busy');
	return new UserError(`Camera and microphone could not be opened (${name || error}).`, 'media_error');
}

/** A token from the URL, or one asked from the server. */
async function obtainToken(roomId, name) {
	const given = params.get('token');
	if (given) {
		const claims = tokenClaims(given);
		if (tokenExpired(claims)) throw new UserError('This meeting link has expired: ask for a new one.', 'token_expired');
		return { token: given, identity: claims?.sub || '', claims };
	}
	try {
		const answer = await fetchToken(roomId, { name, identity: sessionStorage.getItem(`parley.identity.${roomId}`) || undefined });
		sessionStorage.setItem(`parley.identity.${roomId}`, answer.identity);
		return { token: answer.token, identity: answer.identity, claims: tokenClaims(answer.token) };
	} catch (error) {
		if (error.code === 'not_signed_in') {
			const me = await whoAmI().catch(() => ({}));
			if (me.signInEnabled) throw new UserError('Sign in to join this meeting.', 'not_signed_in');
			throw new UserError('Sign in to join this meeting: this server needs an access link (with a token) from the organiser.', 'token_required');
		}
		throw error;
	}
}

async function join(roomId, name, media, choices = {}) {
	timings.joinClicked = performance.now();
	localStorage.setItem('parley.name', name);
	const { token, identity, claims } = await obtainToken(roomId, name);
	const peerId = identity || crypto.randomUUID();
	const meeting = new Meeting(app, { roomId, peerId, displayName: name, token, claims, media, choices, timings, openMedia });
	window.parley.meeting = meeting;
	window.parley.client = meeting.client;
	meeting.start();
}

/** The lobby: name, preview, device pickers, then Join. */
async function lobby(roomId) {
	const me = await whoAmI().catch(() => ({}));
	let media = null;
	let mediaError = '';
	const name = h('input', { id: 'name', name: 'name', required: true, maxlength: 256, autocomplete: 'name', value: params.get('name') || localStorage.getItem('parley.name') || me.user?.name || '' });
	const video = h('video', { class: 'preview', autoplay: true, muted: true, playsInline: true, 'aria-label': 'Your camera preview' });
	const camSelect = h('select', { id: 'camera', 'aria-label': 'Camera' });
	const micSelect = h('select', { id: 'microphone', 'aria-label': 'Microphone' });
	const micOn = h('input', { type: 'checkbox', id: 'mic-on', checked: true });
	const camOn = h('input', { type: 'checkbox', id: 'cam-on', checked: true });
	const status = h('p', { class: 'hint', role: 'status' });
	const joinButton = h('button', { class: 'primary', type: 'submit' }, 'Join meeting');

	async function preview() {
		media?.getTracks().forEach((t) => t.stop());
		media = null;
		try {
			media = await openMedia({ audioDeviceId: micSelect.value, videoDeviceId: camSelect.value });
			mediaError = '';
		} catch (error) {
			mediaError = error.message;
		}
		video.srcObject = media;
		status.textContent = mediaError;
		await fillDevices();
	}

	async function fillDevices() {
		const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
		for (const [select, kind] of [[camSelect, 'videoinput'], [micSelect, 'audioinput']]) {
			const current = select.value || media?.getTracks().find((t) => t.kind === kind.slice(0, 5))?.getSettings().deviceId;
			select.replaceChildren(...devices.filter((d) => d.kind === kind).map((d, i) => h('option', { value: d.deviceId }, d.label || `${kind === 'videoinput' ? 'Camera' : 'Microphone'} ${i + 1}`)));
			if (current) select.value = current;
		}
	}

	camSelect.addEventListener('change', preview);
	micSelect.addEventListener('change', preview);

	const signIn = me.signInEnabled && !me.signedIn
		? h('p', {}, h('a', { class: 'button', href: `/auth/login?next=${encodeURIComponent(location.pathname)}` }, 'Sign in with Google'))
		: null;
	const form = h('form', { class: 'panel lobby', onsubmit: async (e) => {
		e.preventDefault();
		joinButton.disabled = true;
		status.textContent = 'Joining…';
		try {
			video.srcObject = null;
			await join(roomId, name.value.trim(), media, { micOn: micOn.checked, camOn: camOn.checked, audioDeviceId: micSelect.value, videoDeviceId: camSelect.value });
		} catch (error) {
			status.textContent = error.message;
			joinButton.disabled = false;
		}
	} },
	h('h1', {}, `Join “${roomId}”`),
	video,
	h('div', { class: 'devices' },
		h('label', { for: 'camera' }, 'Camera'), camSelect,
		h('label', { for: 'microphone' }, 'Microphone'), micSelect),
	h('div', { class: 'toggles' },
		h('label', {}, micOn, ' Microphone on'),
		h('label', {}, camOn, ' Camera on')),
	h('label', { for: 'name' }, 'Your name'),
	name,
	signIn,
	me.signedIn ? h('p', { class: 'hint' }, `Signed in as ${me.user?.name || me.user?.email}.`) : null,
	joinButton,
	status);
	app.replaceChildren(h('main', { class: 'center' }, form));
	name.focus();
	await preview();
}

async function main() {
	const roomId = roomFromPath();
	if (roomId === null) return home();
	if (!ROOM_RE.test(roomId)) return showError(`“${roomId}” is not a valid room name: use 1-64 letters, digits, "-" or "_".`);
	if (params.get('autojoin') === '1') {
		const name = params.get('name') || localStorage.getItem('parley.name') || 'Guest';
		let media = null;
		try {
			media = await openMedia();
		} catch (error) {
			console.warn('parley: joining without media:', error.message);
		}
		timings.mediaReady = performance.now();
		return join(roomId, name, media, { micOn: true, camOn: true });
	}
	return lobby(roomId);
}

main().catch((error) => showError(error.message || String(error), () => location.reload(), error.code === 'not_signed_in'));
