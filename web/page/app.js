// StreamHub demo chat: one WebSocket to GET /v1/stream, any number of
// sessions over it. Messages are JSON text frames with the field names of
// the wire contract (data in base64).
//
// Nothing lost, nothing twice: each session remembers the last seq it
// showed and its epoch. After a drop the page reconnects with backoff and
// rejoins every session from that seq; a delivery is shown only if it is
// the next seq, so whatever arrives twice (the server also restores
// memberships by itself) is dropped. A joined with recovered: false says
// history no longer holds everything: the page says so, and then accepts
// the jump to what history still holds.
(() => {
  'use strict';

  const ID = /^[A-Za-z0-9._:-]{1,128}$/;
  const HEARTBEAT_MS = 25000; // under the server's --max-inactivity default
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const JOIN_RETRY_MS = 3000; // a gap no replay filled by then asks again

  const $ = (sel) => document.querySelector(sel);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  const params = new URLSearchParams(location.search);
  const store = {
    get(k) { try { return localStorage.getItem('streamhub.' + k); } catch { return null; } },
    set(k, v) { try { localStorage.setItem('streamhub.' + k, v); } catch { /* private mode */ } },
  };

  const state = {
    name: null, // the client_id asked for
    me: null, // the client_id the server settled on (welcome)
    token: params.get('token'),
    sessions: new Map(), // name -> session
    active: null,
    ws: null,
    conn: 0, // counts connections, to say things once per connection
    connected: false,
    attempt: 0,
    retryTimer: 0,
    heartbeatTimer: 0,
    goaway: null,
    stopped: false,
    nextID: 0,
  };

  // ---- Sessions ------------------------------------------------------------

  function session(name) {
    let s = state.sessions.get(name);
    if (s) return s;
    s = {
      name,
      lastSeq: 0, // join with seq 0: the history first
      epoch: null,
      expectJump: false, // a joined said recovered: false
      noticeConn: -1,
      joinSentAt: 0,
      unread: 0,
      lastFrom: null,
      list: el('ol', 'messages'),
      pending: el('ol', 'pending'),
      item: el('li'),
      count: el('span', 'count'),
    };
    s.list.dataset.session = name;
    s.pending.dataset.session = name;
    const box = el('div', 'session-log');
    box.dataset.session = name;
    box.append(s.list, s.pending);
    box.hidden = true;
    s.box = box;
    $('#log').append(box);

    s.item.dataset.session = name;
    const leave = el('button', 'leave', '×');
    leave.type = 'button';
    leave.title = 'Leave ' + name;
    leave.addEventListener('click', (ev) => { ev.stopPropagation(); leaveSession(name); });
    s.count.hidden = true;
    s.item.append(el('span', 'name', name), s.count, leave);
    s.item.addEventListener('click', () => activate(name));
    $('#sessions').append(s.item);

    state.sessions.set(name, s);
    saveSessions();
    if (state.connected) sendJoin(s);
    return s;
  }

  function leaveSession(name) {
    const s = state.sessions.get(name);
    if (!s) return;
    send({ type: 'control', action: 'leave', session_id: name });
    s.item.remove();
    s.box.remove();
    state.sessions.delete(name);
    saveSessions();
    if (state.active === name) {
      const next = state.sessions.keys().next();
      activate(next.done ? null : next.value);
    }
  }

  function saveSessions() { store.set('sessions', [...state.sessions.keys()].join(',')); }

  function activate(name) {
    state.active = name;
    for (const s of state.sessions.values()) {
      const on = s.name === name;
      s.box.hidden = !on;
      s.item.classList.toggle('active', on);
      if (on) { s.unread = 0; renderUnread(s); }
    }
    $('#room-title').textContent = name || '';
    $('#composer').placeholder = name ? 'Message #' + name : 'Join a session to chat';
    updateComposer();
    scrollToEnd(true);
    updateTitle();
    if (name) $('#composer').focus();
  }

  function renderUnread(s) {
    s.count.hidden = s.unread === 0;
    s.count.textContent = s.unread > 99 ? '99+' : String(s.unread);
    s.item.classList.toggle('unread', s.unread > 0);
  }

  function updateTitle() {
    let n = 0;
    for (const s of state.sessions.values()) n += s.unread;
    document.title = (n ? '(' + n + ') ' : '') + (state.active ? '#' + state.active + ' · ' : '') + 'StreamHub';
  }

  // ---- Connection ------------------------------------------------------------

  function endpoint() {
    const u = new URL('/v1/stream', location.href);
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    if (state.name) u.searchParams.set('client_id', state.name);
    if (state.token) u.searchParams.set('token', state.token);
    return u;
  }

  function connect() {
    clearTimeout(state.retryTimer);
    if (state.stopped) return;
    const u = endpoint();
    const shown = new URL(u);
    if (shown.searchParams.has('token')) shown.searchParams.set('token', '…');
    $('#endpoint').textContent = shown.toString();
    setStatus(state.conn === 0 ? 'connecting' : 'reconnecting', state.conn === 0 ? 'connecting' : 'reconnecting');
    const ws = new WebSocket(u);
    state.ws = ws;
    state.goaway = null;
    ws.onmessage = (ev) => {
      if (ws !== state.ws) return;
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      receive(m);
    };
    ws.onclose = (ev) => { if (ws === state.ws) dropped(ev); };
  }

  function dropped(ev) {
    state.ws = null;
    state.connected = false;
    clearInterval(state.heartbeatTimer);
    for (const s of state.sessions.values()) {
      for (const li of s.pending.children) markFailed(li);
    }
    updateComposer();
    if (ev.code === 4409 || state.goaway === 'replaced') {
      stop('replaced', 'You opened StreamHub as ' + (state.me || state.name) + ' somewhere else; this page stepped aside.', 'Use it here');
      return;
    }
    if (ev.code === 4401) {
      stop('unauthorized', 'Your token expired. Open the page with a fresh ?token=… to carry on.', 'Retry');
      return;
    }
    // The server is going away (shutdown, stream age): come back soon,
    // spread over a second so that clients do not all arrive at once.
    const soon = ev.code === 1001 || state.goaway === 'shutdown' || state.goaway === 'max_stream_age';
    const base = soon ? 1000 : Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
    const delay = soon ? Math.random() * base : base / 2 + Math.random() * base / 2;
    state.attempt++;
    setStatus('reconnecting', 'reconnecting in ' + Math.max(1, Math.round(delay / 1000)) + 's');
    state.retryTimer = setTimeout(connect, delay);
  }

  function stop(why, text, action) {
    state.stopped = true;
    setStatus('stopped', why);
    showBanner(text, action, () => {
      hideBanner();
      state.stopped = false;
      state.attempt = 0;
      connect();
    });
  }

  function send(m) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
    state.ws.send(JSON.stringify(m));
    return true;
  }

  function sendJoin(s) {
    const m = { type: 'control', action: 'join', session_id: s.name, seq: s.lastSeq };
    if (s.epoch) m.epoch = s.epoch;
    s.joinSentAt = Date.now();
    send(m);
  }

  function setStatus(st, text) {
    const b = $('#status');
    b.dataset.state = st;
    $('#status-text').textContent = text;
  }

  // ---- Receiving -----------------------------------------------------------------

  function receive(m) {
    switch (m.type) {
      case 'data': return onData(m);
      case 'health_check': send({ type: 'heartbeat' }); return; // answers the probe, asks nothing back
      case 'control': return onControl(m);
      default: return; // heartbeat
    }
  }

  function onControl(m) {
    const s = m.session_id ? state.sessions.get(m.session_id) : null;
    switch (m.action) {
      case 'welcome':
        state.conn++;
        state.connected = true;
        state.attempt = 0;
        state.me = m.client_id;
        renderMe();
        setStatus('connected', 'connected');
        hideBanner();
        updateComposer();
        clearInterval(state.heartbeatTimer);
        state.heartbeatTimer = setInterval(() => send({ type: 'heartbeat' }), HEARTBEAT_MS);
        for (const ss of state.sessions.values()) sendJoin(ss);
        return;
      case 'joined':
        if (s) onJoined(s, m);
        return;
      case 'goaway':
        state.goaway = m.reason;
        return;
      case 'error':
        onError(m);
        return;
      default:
        return; // left, paused, resumed
    }
  }

  function onJoined(s, m) {
    if (s.epoch && m.epoch !== s.epoch) {
      // The session's history began anew (the server restarted, or the
      // session expired): what came after our last seq is gone. Take the
      // new history from its start.
      notice(s, 'warn', 'Session history restarted: messages after #' + s.lastSeq + ' could not be recovered.');
      s.noticeConn = state.conn;
      s.epoch = m.epoch;
      s.lastSeq = 0;
      s.expectJump = false;
      sendJoin(s);
      return;
    }
    s.epoch = m.epoch;
    if (m.recovered === false) {
      s.expectJump = true;
      if (s.lastSeq === 0) { // nothing shown yet: nothing lost either
        notice(s, 'info', 'Older messages of #' + s.name + ' are no longer kept.');
      } else if (s.noticeConn !== state.conn) {
        notice(s, 'warn', 'Some messages after #' + s.lastSeq + ' could not be recovered: history no longer holds them.');
        s.noticeConn = state.conn;
      }
    }
  }

  function onData(m) {
    const s = state.sessions.get(m.session_id);
    if (!s || typeof m.seq !== 'number') return;
    if (m.seq <= s.lastSeq) return; // shown already
    if (m.seq > s.lastSeq + 1 && !s.expectJump) {
      // Not the next one: a replay another join supersedes, or a gap the
      // join's replay fills. If none does, ask again.
      if (Date.now() - s.joinSentAt > JOIN_RETRY_MS) sendJoin(s);
      return;
    }
    s.expectJump = false;
    s.lastSeq = m.seq;
    if (m.client_id === state.me && m.id) {
      const p = s.pending.querySelector('[data-id="' + CSS.escape(m.id) + '"]');
      if (p) p.remove();
    }
    const atEnd = nearEnd();
    s.list.append(renderMessage(s, m));
    if (s.name === state.active && !document.hidden) {
      if (atEnd || m.client_id === state.me) scrollToEnd(true);
    } else {
      s.unread++;
      renderUnread(s);
      updateTitle();
    }
  }

  function onError(m) {
    const s = m.session_id ? state.sessions.get(m.session_id) : null;
    if (m.id && s) {
      const p = s.pending.querySelector('[data-id="' + CSS.escape(m.id) + '"]');
      if (p) markFailed(p, m.reason);
    }
    const target = s || (state.active && state.sessions.get(state.active));
    if (target) notice(target, 'error', 'Server: ' + (m.reason || 'error'));
  }

  // ---- Rendering -------------------------------------------------------------------

  function decode(b64) {
    if (!b64) return '';
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new TextDecoder().decode(bytes);
  }

  function encode(text) {
    const bytes = new TextEncoder().encode(text);
    let bin = '';
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  function hue(name) { // FNV-1a: similar names get different colors
    let h = 2166136261;
    for (const c of name) h = Math.imul(h ^ c.codePointAt(0), 16777619) >>> 0;
    return h % 360;
  }

  function avatar(name, cls) {
    const a = el('div', 'avatar' + (cls ? ' ' + cls : ''), (name || '?').replace(/^anon-/, '').slice(0, 1));
    a.style.setProperty('--hue', String(hue(name || '?')));
    return a;
  }

  function clock(ms) {
    const d = new Date(ms);
    const t = el('time', '', d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }));
    t.dateTime = d.toISOString();
    t.title = d.toLocaleString();
    return t;
  }

  function renderMessage(s, m) {
    const li = el('li', 'msg');
    li.dataset.seq = String(m.seq);
    li.dataset.from = m.client_id || '';
    if (m.id) li.dataset.id = m.id;
    if (m.client_id === state.me) li.classList.add('mine');
    if (s.lastFrom === m.client_id && s.list.lastElementChild && s.list.lastElementChild.classList.contains('msg')) li.classList.add('cont');
    s.lastFrom = m.client_id;
    const body = el('div', 'body');
    const meta = el('div', 'meta');
    meta.append(el('span', 'from', m.client_id || 'unknown'), clock(m.timestamp || Date.now()), el('span', 'seq', '#' + m.seq));
    body.append(meta, el('div', 'text', decode(m.data)));
    li.append(avatar(m.client_id), body);
    return li;
  }

  function notice(s, kind, text) {
    const li = el('li', 'notice ' + kind);
    li.append(el('span', '', text), clock(Date.now()));
    s.lastFrom = null;
    s.list.append(li);
    if (s.name === state.active) scrollToEnd(nearEnd());
  }

  function markFailed(li, reason) {
    if (!li.classList.contains('pending') || li.classList.contains('failed')) return;
    li.classList.add('failed');
    const seq = li.querySelector('.seq');
    seq.textContent = reason ? 'refused: ' + reason : 'not delivered';
    if (!reason) {
      const retry = el('button', 'link retry', 'retry');
      retry.type = 'button';
      retry.addEventListener('click', () => {
        if (!state.connected) return;
        const s = state.sessions.get(li.dataset.session);
        li.remove();
        if (s) publish(s, li.dataset.text);
      });
      seq.after(retry);
    }
  }

  function renderMe() {
    const name = state.me || state.name;
    $('#me-name').textContent = name;
    const a = $('#me-avatar');
    a.textContent = name.replace(/^anon-/, '').slice(0, 1);
    a.style.setProperty('--hue', String(hue(name)));
  }

  function nearEnd() {
    const log = $('#log');
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }

  function scrollToEnd(yes) {
    if (!yes) return;
    const log = $('#log');
    log.scrollTop = log.scrollHeight;
  }

  function showBanner(text, action, onAction) {
    $('#banner-text').textContent = text;
    const b = $('#banner-action');
    b.textContent = action;
    b.onclick = onAction;
    $('#banner').hidden = false;
  }

  function hideBanner() { $('#banner').hidden = true; }

  function updateComposer() {
    $('#send').disabled = !state.connected || !state.active;
  }

  // ---- Sending ------------------------------------------------------------------

  function publish(s, text) {
    const id = 'm-' + Date.now().toString(36) + '-' + (state.nextID++).toString(36);
    if (!send({ type: 'data', session_id: s.name, data: encode(text), id })) return false;
    const li = el('li', 'msg mine pending');
    li.dataset.id = id;
    li.dataset.session = s.name;
    li.dataset.text = text;
    const body = el('div', 'body');
    const meta = el('div', 'meta');
    meta.append(el('span', 'from', state.me), clock(Date.now()), el('span', 'seq', 'sending…'));
    body.append(meta, el('div', 'text', text));
    li.append(avatar(state.me), body);
    s.pending.append(li);
    scrollToEnd(true);
    return true;
  }

  // ---- Start ----------------------------------------------------------------------

  function start(name, sessions) {
    state.name = name;
    store.set('name', name);
    $('#login').hidden = true;
    $('#app').hidden = false;
    renderMe();
    for (const n of sessions) session(n);
    activate(sessions[0] || null);
    connect();
  }

  $('#login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = $('#name').value.trim();
    const first = $('#session').value.trim();
    if (!ID.test(name) || !ID.test(first)) return;
    const saved = (store.get('sessions') || '').split(',').filter((n) => ID.test(n) && n !== first);
    start(name, [first, ...saved]);
  });

  $('#join-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('#join-input');
    const name = input.value.trim();
    if (!ID.test(name)) return;
    input.value = '';
    session(name);
    activate(name);
  });

  $('#send-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const box = $('#composer');
    const text = box.value.trim();
    const s = state.active && state.sessions.get(state.active);
    if (!s || !text || !state.connected) return;
    if (publish(s, text)) {
      box.value = '';
      box.style.height = '';
    }
  });

  $('#composer').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('#send-form').requestSubmit();
    }
  });
  // Some input paths (automation, a few IMEs) deliver the Enter's character
  // on its own: it must not land in the emptied box.
  $('#composer').addEventListener('keypress', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey) ev.preventDefault();
  });
  $('#composer').addEventListener('input', (ev) => {
    const t = ev.target;
    t.style.height = '';
    t.style.height = Math.min(Math.max(t.scrollHeight + 2, 40), 160) + 'px';
  });

  $('#switch-user').addEventListener('click', () => {
    store.set('name', '');
    location.replace(location.pathname + (state.token ? '?token=' + encodeURIComponent(state.token) : ''));
  });

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.active) {
      const s = state.sessions.get(state.active);
      s.unread = 0;
      renderUnread(s);
      updateTitle();
    }
  });
  window.addEventListener('online', () => { if (!state.ws && !state.stopped) connect(); });

  // ?name=alice&session=lobby starts at once; a reload picks up where the
  // page was (from the history: the messages shown are not stored).
  const name = params.get('name') || store.get('name') || '';
  const first = params.get('session');
  const saved = (store.get('sessions') || '').split(',').filter((n) => ID.test(n));
  if (ID.test(name) && (first ? ID.test(first) : saved.length > 0)) {
    start(name, first ? [first, ...saved.filter((n) => n !== first)] : saved);
  } else {
    $('#name').value = name;
    $('#login').hidden = false;
    $('#name').focus();
  }

  // For tests and the curious: the page's state, read-only by convention.
  window.streamhub = state;
})();
