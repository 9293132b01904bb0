// The server's REST routes the page uses: sign-in state and access tokens (control/auth/routes.py).

/** An error a person can read: `message` is shown as it is. */
export class UserError extends Error {
	constructor(message, code = '') {
		super(message);
		this.code = code;
	}
}

async function getJson(url) {
	let response;
	try {
		response = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
	} catch {
		throw new UserError('The server cannot be reached. Check your connection and try again.', 'unreachable');
	}
	const body = await response.json().catch(() => ({}));
	if (!response.ok) {
		const error = body.error || {};
		throw new UserError(error.message || `The server answered ${response.status}.`, error.code || String(response.status));
	}
	return body;
}

/** `{signedIn, user, signInEnabled, openJoin}` (GET /auth/me). */
export function whoAmI() {
	return getJson('/auth/me');
}

/** A token for `room`: `{token, identity, room, expiresAt}` (GET /api/token). */
export function fetchToken(room, { identity, name } = {}) {
	const query = new URLSearchParams({ room });
	if (identity) query.set('identity', identity);
	if (name) query.set('name', name);
	return getJson(`/api/token?${query}`);
}

/** The claims of a JWT (not verified: the server does that), or null. */
export function tokenClaims(token) {
	try {
		const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
		return JSON.parse(decodeURIComponent(escape(atob(part))));
	} catch {
		return null;
	}
}

/** True when the token's `exp` is in the past. */
export function tokenExpired(claims) {
	return Boolean(claims && typeof claims.exp === 'number' && claims.exp * 1000 < Date.now());
}
