// A few DOM helpers: the page is plain DOM, no framework.

/**
 * Create an element: h('button', {class: 'x', onclick: fn, 'aria-label': 'y'}, 'text', child).
 * Attributes starting with "on" become listeners; `false`/`null` attributes are left out.
 */
export function h(tag, attrs = {}, ...children) {
	const el = document.createElement(tag);
	for (const [name, value] of Object.entries(attrs || {})) {
		if (value === false || value === null || value === undefined) continue;
		if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
		else if (name === 'class') el.className = value;
		else if (name in el && typeof value !== 'string') el[name] = value;
		else el.setAttribute(name, value === true ? '' : value);
	}
	for (const child of children.flat()) {
		if (child === null || child === undefined || child === false) continue;
		el.append(child instanceof Node ? child : document.createTextNode(String(child)));
	}
	return el;
}

/** Initials of a display name for the name card ("Ada Lovelace" -> "AL"). */
export function initials(name) {
	const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
	return (parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] || '?').slice(0, 2)).toUpperCase();
}

/** A stable hue for a name, so each person's card keeps its colour. */
export function hueOf(text) {
	let hash = 0;
	for (const ch of String(text)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
	return hash % 360;
}

export function formatTime(iso) {
	const date = new Date(iso);
	return Number.isNaN(date.getTime()) ? '' : date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}
