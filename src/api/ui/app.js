// The search playground. It talks to the API from the browser and builds the page from what
// the server answers with DOM nodes and textContent only, never by parsing strings as markup:
// passage text, metadata and error messages are data, and none of it may become code. The
// page's Content-Security-Policy forbids inline script and style, so nothing here sets either.
'use strict';

(() => {
  /** Characters of the document shown on each side of a passage "in context". */
  const CONTEXT_CHARS = 600;

  /** Words too common to be worth highlighting. */
  const STOP_WORDS = new Set(('a an and are as at be but by can do does for from has have how i if ' +
    'in into is it its of on or so than that the their then there these this to was what when ' +
    'where which who why will with you your').split(' '));

  const state = {
    /** The API key: in this variable only, never in storage or a cookie. */
    key: null,
    /** Whether the server accepted the key: null until it answers a request that carried it. */
    keyAccepted: null,
    /** The open key prompt, shared by every request that got a 401 while it is open. */
    keyPrompt: null,
    /** `present`, `absent` or `unknown`: whether the server runs a reranker. */
    reranker: 'unknown',
    /** The selected collection, as `GET /collections/{name}` last answered. */
    current: null,
    /** Sequence numbers: an answer that arrives after a newer request was sent is dropped. */
    searchSeq: 0,
    statsSeq: 0,
    /** Documents fetched for "in context", by collection and id, for the current results. */
    documents: new Map(),
  };

  const $ = (id) => document.getElementById(id);

  /**
   * An element with properties (`className`, `title`, `type`, ...) and children: nodes, or
   * strings, which become text nodes.
   */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value !== undefined && value !== null) node[name] = value;
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // ---------------------------------------------------------------------------------------
  // The API

  /** An error from the server (its `code` and `message`), or one the page found itself. */
  class ApiError extends Error {
    constructor(status, code, message, requestId) {
      super(message);
      this.status = status;
      this.code = code;
      this.requestId = requestId;
    }
  }

  /** An error found in the page, before anything was sent. */
  const pageError = (code, message) => new ApiError(0, code, message, null);

  /**
   * Calls the API and returns its JSON answer, or throws an ApiError. A 401 opens the key
   * prompt and, once a key is entered, sends the request again.
   */
  async function api(method, path, body) {
    for (;;) {
      const sentKey = state.key;
      const headers = { Accept: 'application/json' };
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      if (sentKey !== null) headers.Authorization = `Bearer ${sentKey}`;
      let response;
      try {
        // Relative to the page, so that it also works behind a proxy that adds a path prefix.
        response = await fetch(new URL(path, document.baseURI), {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          cache: 'no-store',
          credentials: 'omit',
        });
      } catch (e) {
        throw new ApiError(0, 'network_error', `the server could not be reached (${e.message})`, null);
      }
      const requestId = response.headers.get('x-request-id');
      const text = await response.text();
      let data = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch {
        data = null;
      }
      const error = data && typeof data === 'object' && data.error && typeof data.error.code === 'string'
        ? data.error : null;
      if (response.status === 401) {
        if (state.key === sentKey) state.keyAccepted = false;
        showKeyButton();
        // Another request's prompt may have set a key since this one was sent.
        if (state.key !== sentKey) continue;
        const reason = error ? String(error.message) : 'this server requires an API key';
        if (await askForKey(reason, sentKey !== null)) continue;
      } else if (sentKey !== null && sentKey === state.key && state.keyAccepted !== true) {
        state.keyAccepted = true;
        showKeyButton();
      }
      if (!response.ok) {
        if (error) throw new ApiError(response.status, error.code, String(error.message ?? ''), requestId);
        const snippet = text.trim().slice(0, 300) || response.statusText || 'no body';
        throw new ApiError(response.status, `http_${response.status}`, snippet, requestId);
      }
      if (data === null || typeof data !== 'object') {
        throw new ApiError(response.status, 'invalid_response', 'the server did not answer with JSON', requestId);
      }
      return data;
    }
  }

  const collectionPath = (name) => `collections/${encodeURIComponent(name)}`;

  // ---------------------------------------------------------------------------------------
  // The API key

  /** Opens the key prompt, saying why (`refused`: the server refused the key sent); resolves
   *  to true once a key is entered, false when cancelled. */
  function askForKey(reason, refused) {
    if (state.keyPrompt) return state.keyPrompt.promise;
    let resolve;
    const promise = new Promise((r) => { resolve = r; });
    state.keyPrompt = { promise, resolve };
    $('key-reason').textContent = reason;
    $('key-reason').classList.toggle('bad', Boolean(refused));
    $('key-input').value = '';
    $('key-panel').hidden = false;
    $('key-input').focus();
    return promise;
  }

  function closeKeyPrompt(accepted) {
    $('key-panel').hidden = true;
    $('key-input').value = '';
    const prompt = state.keyPrompt;
    state.keyPrompt = null;
    if (prompt) prompt.resolve(accepted);
  }

  function submitKey(event) {
    event.preventDefault();
    const key = $('key-input').value.trim();
    // Header values are bytes; fetch refuses characters beyond Latin-1 with an obscure error.
    if (!key || /[^\x20-\x7e]/.test(key)) {
      $('key-reason').textContent = key ? 'An API key is printable ASCII.' : 'Type the key first.';
      $('key-reason').classList.add('bad');
      return;
    }
    state.key = key;
    state.keyAccepted = null;
    showKeyButton();
    closeKeyPrompt(true);
  }

  function showKeyButton() {
    const button = $('key-button');
    button.hidden = false;
    if (state.key === null) button.textContent = 'API key: none';
    else button.textContent = state.keyAccepted === false ? 'API key: refused' : 'API key: set';
    button.classList.toggle('ok', state.key !== null && state.keyAccepted === true);
  }

  // ---------------------------------------------------------------------------------------
  // Errors

  function errorNode(err, context) {
    const e = err instanceof ApiError ? err : pageError('page_error', String((err && err.message) || err));
    const head = h('div', { className: 'error-head' },
      h('span', { className: 'error-code' }, e.code),
      e.status ? h('span', { className: 'error-status' }, `HTTP ${e.status}`) : null,
      e.status === 0 && e.code !== 'network_error' ? h('span', { className: 'error-status' }, 'not sent') : null,
      context ? h('span', { className: 'error-context' }, context) : null);
    const parts = [head, h('p', { className: 'error-message' }, e.message)];
    if (e.code === 'unauthorized') parts.push(h('p', { className: 'error-meta' }, 'Use the API key button at the top to enter a key.'));
    if (e.requestId) parts.push(h('p', { className: 'error-meta' }, `request id ${e.requestId}`));
    return parts;
  }

  function showError(err, context) {
    const box = $('error');
    box.replaceChildren(...errorNode(err, context));
    box.hidden = false;
  }

  function clearError() {
    $('error').hidden = true;
    $('error').replaceChildren();
  }

  // ---------------------------------------------------------------------------------------
  // Formatting

  const fmtInt = (n) => (Number.isFinite(n) ? n.toLocaleString('en-US') : '—');
  const fmtScore = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(4) : String(x));
  const fmtMs = (ms) => (typeof ms === 'number' ? `${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms` : '—');

  function fmtBytes(n) {
    if (!Number.isFinite(n)) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
  }

  const plural = (n, one, many) => `${fmtInt(n)} ${n === 1 ? one : many}`;

  // ---------------------------------------------------------------------------------------
  // Highlighting

  /**
   * A rough English stem: enough to light up "ships" for "ship" or "indexed" for "indexes".
   * The server's lexical index stems properly; this only decides what the page highlights.
   */
  function stem(word) {
    let w = word;
    if (w.length > 4 && w.endsWith('ies')) w = `${w.slice(0, -3)}y`;
    else if (w.length > 4 && /(xes|ches|shes|sses|zes)$/.test(w)) w = w.slice(0, -2);
    else if (w.length > 3 && w.endsWith('s') && !w.endsWith('ss') && !w.endsWith('us')) w = w.slice(0, -1);
    if (w.length > 5 && w.endsWith('ing')) w = w.slice(0, -3);
    else if (w.length > 4 && w.endsWith('ed')) w = w.slice(0, -2);
    // "embedd" (from "embedding") -> "embed"
    if (w.length > 3 && /([^aeioulsz])\1$/.test(w)) w = w.slice(0, -1);
    return w;
  }

  const WORD = /[\p{L}\p{N}]+/gu;

  /** A test of whether a word of a text matches one of the query's words. */
  function termMatcher(query) {
    const stems = new Set();
    for (const m of query.toLowerCase().matchAll(WORD)) {
      const w = m[0];
      if (STOP_WORDS.has(w) || (w.length < 2 && !/\p{N}/u.test(w))) continue;
      stems.add(stem(w));
    }
    return (word) => stems.size > 0 && stems.has(stem(word.toLowerCase()));
  }

  /** Appends `text` to `parent` as text nodes, the words that `matches` in <mark>s. */
  function appendHighlighted(parent, text, matches) {
    let last = 0;
    for (const m of text.matchAll(WORD)) {
      if (!matches(m[0])) continue;
      if (m.index > last) parent.append(text.slice(last, m.index));
      parent.append(h('mark', { className: 'term' }, m[0]));
      last = m.index + m[0].length;
    }
    if (last < text.length) parent.append(text.slice(last));
  }

  // ---------------------------------------------------------------------------------------
  // Server and collections

  async function loadInfo() {
    try {
      const info = await api('GET', 'info');
      $('server-info').replaceChildren(
        h('span', { className: 'model', title: 'The embedding model' }, info.model),
        h('span', { className: 'muted' }, ` · ${info.dimension} dimensions · vicinity ${info.version}`));
      // `reranker` names the server's cross-encoder, or is null when it runs none.
      setReranker(info.reranker ? 'present' : 'absent');
      return true;
    } catch (e) {
      $('server-info').textContent = 'not connected';
      showError(e, 'reading the server information');
      return false;
    }
  }


  function setReranker(availability) {
    state.reranker = availability;
    const note = $('rerank-note');
    if (availability === 'absent') {
      $('rerank').checked = false;
      note.replaceChildren('This server runs no reranker: start it with ', h('code', null, '--reranker'),
        ' (a cross-encoder model) to rerank hits.');
      note.hidden = false;
    } else {
      note.hidden = true;
    }
    updateOptions();
  }

  async function loadCollections() {
    const select = $('collection');
    const wanted = select.value || new URLSearchParams(window.location.search).get('collection');
    let list;
    try {
      list = await api('GET', 'collections');
    } catch (e) {
      showError(e, 'listing the collections');
      return;
    }
    const collections = Array.isArray(list.collections) ? list.collections : [];
    select.replaceChildren();
    if (collections.length === 0) {
      select.append(h('option', { value: '' }, 'no collections yet'));
      select.disabled = true;
      state.current = null;
      renderStats(null);
      setNote('This server has no collections yet. Create one with PUT /collections/{name} and add documents with POST /collections/{name}/documents.');
      return;
    }
    for (const c of collections) {
      select.append(h('option', { value: c.name }, c.status === 'failed' ? `${c.name} (failed)` : c.name));
    }
    select.disabled = false;
    if (wanted && collections.some((c) => c.name === wanted)) select.value = wanted;
    await selectCollection(select.value);
  }

  async function selectCollection(name) {
    const seq = ++state.statsSeq;
    try {
      const info = await api('GET', collectionPath(name));
      if (seq !== state.statsSeq) return;
      state.current = info;
      renderStats(info);
    } catch (e) {
      if (seq !== state.statsSeq) return;
      state.current = null;
      renderStats(null);
      showError(e, `reading collection ${name}`);
    }
  }

  function setNote(text) {
    $('collection-note').textContent = text || '';
    $('collection-note').hidden = !text;
  }

  function pill(text, tone) {
    return h('span', { className: `pill ${tone || ''}` }, text);
  }

  function indexStateNode(info) {
    const s = info.index_state || {};
    const type = info.index && info.index.type;
    const parts = [];
    if (s.status === 'ready') {
      parts.push(pill('ready', 'ok'), ` · ${s.ann || type || ''} · ${fmtInt(s.indexed)} indexed`);
      if (s.pending) parts.push(` · ${fmtInt(s.pending)} pending`);
    } else if (s.status === 'none') {
      parts.push(pill('exact scan', 'neutral'), type ? ` · ${type} index` : '');
    } else {
      parts.push(pill(s.status || 'unknown', 'warn'), ` · ${type || ''} index · exact scans meanwhile`);
    }
    return h('span', null, ...parts);
  }

  function lexicalNode(info) {
    const l = info.lexical;
    if (!l) return h('span', { className: 'muted' }, 'none');
    return h('span', null, pill(l.status, l.status === 'ready' ? 'ok' : 'bad'),
      ` · ${l.language} · ${fmtBytes(l.disk_bytes)} on disk`);
  }

  function renderStats(info) {
    const stats = $('stats');
    stats.replaceChildren();
    setNote('');
    if (!info) return;
    const rows = [
      ['Documents', fmtInt(info.documents)],
      ['Passages', fmtInt(info.passages)],
      ['Dimension', info.dimension ?? '—'],
      ['Distance', info.distance],
      ['Index', indexStateNode(info)],
      ['Lexical', lexicalNode(info)],
      ['Memory', fmtBytes(info.memory_bytes)],
    ];
    if (info.chunking) rows.push(['Chunking', `${info.chunking.max_tokens} tokens, ${info.chunking.overlap} overlap`]);
    if (info.model) rows.push(['Model', h('span', { className: 'wrap', title: info.model }, info.model)]);
    for (const [name, value] of rows) {
      stats.append(h('dt', null, name), h('dd', null, value));
    }
    if (info.status === 'failed') {
      setNote(`This collection could not be restored: ${info.error || 'no reason given'}. Queries answer 503 until it is deleted.`);
    } else if (info.source === 'vector') {
      setNote('This collection takes vectors, and this page searches by text: queries need a text collection.');
    } else if (info.lexical && info.lexical.status !== 'ready') {
      setNote(`The lexical index failed${info.lexical.error ? `: ${info.lexical.error}` : ''}. Lexical and hybrid queries are refused until a restart rebuilds it.`);
    }
    // Without a lexical index only dense search can answer.
    const textSearch = Boolean(info.lexical);
    for (const mode of ['lexical', 'hybrid']) $(`mode-${mode}`).disabled = !textSearch;
    if (!textSearch) $('mode-dense').checked = true;
    updateOptions();
  }

  // ---------------------------------------------------------------------------------------
  // Search options

  const currentMode = () => (document.querySelector('input[name="mode"]:checked') || {}).value || 'hybrid';

  /** Shows the hybrid settings in hybrid mode only, and keeps the options that exclude each
   *  other (reranking, MMR, grouping) from being chosen together. */
  function updateOptions() {
    $('hybrid-options').hidden = currentMode() !== 'hybrid';
    $('alpha-value').textContent = Number($('alpha').value).toFixed(2);
    const rerank = $('rerank');
    const mmr = $('mmr');
    const group = $('group');
    rerank.disabled = state.reranker === 'absent' || mmr.checked || group.checked;
    mmr.disabled = rerank.checked || group.checked;
    group.disabled = rerank.checked || mmr.checked;
    for (const box of [rerank, mmr, group]) {
      const option = box.closest('.option');
      option.classList.toggle('off', box.disabled);
      for (const input of option.querySelectorAll('.sub-options input')) input.disabled = !box.checked;
    }
  }

  function parseFilter() {
    const raw = $('filter').value.trim();
    if (!raw) return { ok: true, value: undefined };
    let value;
    try {
      value = JSON.parse(raw);
    } catch (e) {
      return { ok: false, message: `not valid JSON: ${e.message}` };
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      return { ok: false, message: 'not a JSON object: write it as {"field": value}' };
    }
    return { ok: true, value };
  }

  function showFilterStatus() {
    const result = parseFilter();
    const status = $('filter-status');
    status.textContent = result.ok ? (result.value ? 'Valid JSON.' : '') : `The filter is ${result.message}`;
    status.className = `field-status ${result.ok ? 'ok' : 'bad'}`;
    $('filter').classList.toggle('invalid', !result.ok);
  }

  /** An optional whole number at least `min` from an input; throws when malformed. */
  function intField(id, name, min, optional) {
    const raw = $(id).value.trim();
    if (!raw) {
      if (optional) return undefined;
      throw pageError('invalid_parameter', `${name} is required`);
    }
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < min) {
      throw pageError('invalid_parameter', `${name} must be a whole number, at least ${min}`);
    }
    return n;
  }

  /** The query request the form describes; throws an ApiError for what the page can check. */
  function buildRequest() {
    const query = $('query').value;
    if (!query.trim()) throw pageError('empty_input', 'type a query first');
    const mode = currentMode();
    const body = { query, k: intField('k', 'k', 1, false), mode };
    if (mode === 'hybrid') {
      body.fusion = $('fusion').value;
      body.alpha = Number($('alpha').value);
    }
    const filter = parseFilter();
    if (!filter.ok) {
      $('filter').focus();
      throw pageError('invalid_filter', `the metadata filter is ${filter.message}`);
    }
    if (filter.value) body.filter = filter.value;
    if ($('rerank').checked && !$('rerank').disabled) {
      const topN = intField('top-n', 'top_n', 1, true);
      body.rerank = topN === undefined ? {} : { top_n: topN };
    }
    if ($('mmr').checked && !$('mmr').disabled) {
      const lambda = Number($('mmr-lambda').value.trim() || '0.5');
      if (!(lambda >= 0 && lambda <= 1)) throw pageError('invalid_parameter', 'MMR λ must be between 0 and 1');
      const fetchK = intField('fetch-k', 'fetch_k', 1, true);
      body.mmr = fetchK === undefined ? { lambda } : { lambda, fetch_k: fetchK };
    }
    if ($('group').checked && !$('group').disabled) {
      body.group_by = 'document';
      const size = intField('group-size', 'passages per document', 1, true);
      if (size !== undefined) body.group_size = size;
    }
    return body;
  }

  // ---------------------------------------------------------------------------------------
  // Searching and results

  function setBusy(busy) {
    $('search').disabled = busy;
    $('search').textContent = busy ? 'Searching…' : 'Search';
    document.querySelector('.results').classList.toggle('busy', busy);
  }

  function clearResults() {
    $('hits').replaceChildren();
    $('summary').hidden = true;
    $('summary').replaceChildren();
  }

  async function search(event) {
    event.preventDefault();
    clearError();
    const name = $('collection').value;
    let body;
    try {
      if (!name) throw pageError('no_collection', 'pick a collection first');
      body = buildRequest();
    } catch (e) {
      showError(e);
      return;
    }
    $('request-json').textContent = `POST /${collectionPath(name)}/query\n${JSON.stringify(body, null, 2)}`;
    $('request-details').hidden = false;
    const seq = ++state.searchSeq;
    setBusy(true);
    try {
      const response = await api('POST', `${collectionPath(name)}/query`, body);
      if (seq !== state.searchSeq) return;
      renderResults(response, body, name);
    } catch (e) {
      if (seq !== state.searchSeq) return;
      if (e.code === 'reranker_unavailable') setReranker('absent');
      clearResults();
      $('placeholder').hidden = true;
      showError(e, 'searching');
    } finally {
      if (seq === state.searchSeq) setBusy(false);
    }
  }

  function renderResults(response, request, collection) {
    state.documents.clear();
    const hits = Array.isArray(response.results) ? response.results : [];
    const summary = $('summary');
    const line = h('div', { className: 'summary-line' },
      h('strong', null, plural(hits.length, 'hit', 'hits')),
      h('span', { className: 'muted' }, ` in ${collection}`),
      pill(`plan ${response.plan}`, 'neutral'),
      h('span', { className: 'time', title: 'Time spent in the service' }, fmtMs(response.time_ms)),
      h('span', { className: 'muted', title: 'The collection version this answer includes' }, `version ${response.version}`));
    const parts = [line];
    if (Array.isArray(response.legs) && response.legs.length) {
      parts.push(h('div', { className: 'legs' }, ...response.legs.map((leg) => h('span', { className: 'leg' },
        h('strong', null, leg.leg), ` ${leg.plan} · ${plural(leg.candidates, 'candidate', 'candidates')} · ${fmtMs(leg.time_ms)}`))));
    }
    summary.replaceChildren(...parts);
    summary.hidden = false;

    const matches = termMatcher(request.query);
    $('hits').replaceChildren(...hits.map((hit, i) => renderHit(hit, i, matches, collection)));
    unfoldButtons();
    const placeholder = $('placeholder');
    placeholder.hidden = hits.length > 0;
    placeholder.textContent = request.filter
      ? 'No passage matched the query and the filter.' : 'No passage matched.';
  }

  function scoreChips(hit) {
    const chips = [h('span', { className: 'score', title: 'Higher is better: similarity (dense), BM25 (lexical) or the fused score (hybrid)' },
      h('span', { className: 'label' }, 'score'), fmtScore(hit.score))];
    if (hit.rerank_score !== undefined && hit.rerank_score !== null) {
      chips.push(h('span', { className: 'score rerank', title: "The cross-encoder's score; hits come in its order" },
        h('span', { className: 'label' }, 'rerank'), fmtScore(hit.rerank_score)));
    }
    if (hit.distance !== undefined && hit.distance !== null) {
      chips.push(h('span', { className: 'score distance', title: "The metric's distance: lower is closer" },
        h('span', { className: 'label' }, 'distance'), fmtScore(hit.distance)));
    }
    return h('div', { className: 'scores' }, ...chips);
  }

  function metadataNode(metadata) {
    if (!metadata || typeof metadata !== 'object' || Object.keys(metadata).length === 0) return null;
    return h('div', { className: 'metadata' }, ...Object.entries(metadata).map(([key, value]) => h('span', { className: 'meta' },
      h('span', { className: 'meta-key' }, key),
      h('span', { className: 'meta-value' }, typeof value === 'string' ? value : JSON.stringify(value)))));
  }

  function renderHit(hit, i, matches, collection) {
    const passage = hit.passage || {};
    const text = h('p', { className: 'passage-text' });
    if (typeof hit.text === 'string') appendHighlighted(text, hit.text, matches);
    else text.append(h('em', { className: 'muted' }, 'no text returned'));
    const context = h('div', { className: 'context', hidden: true });
    const toggle = h('button', { type: 'button', className: 'link context-toggle' }, 'In context');
    toggle.addEventListener('click', () => toggleContext(toggle, context, hit, collection, matches));
    // Long passages start folded to a few lines, so that the list can be scanned; the button
    // shows only where the fold hides something (see unfoldButtons).
    text.classList.add('folded');
    const more = h('button', { type: 'button', className: 'link fold-toggle', hidden: true }, 'Show all');
    more.addEventListener('click', () => {
      const folded = text.classList.toggle('folded');
      more.textContent = folded ? 'Show all' : 'Show less';
    });
    return h('li', { className: 'hit' },
      h('div', { className: 'hit-head' },
        h('span', { className: 'rank' }, String(i + 1)),
        h('div', { className: 'ids' },
          h('span', { className: 'doc-id', title: 'Document id' }, hit.document_id),
          h('span', { className: 'passage-id', title: 'Passage id' }, hit.id)),
        scoreChips(hit)),
      text,
      metadataNode(hit.metadata),
      h('div', { className: 'hit-foot' },
        h('span', { className: 'muted' }, `passage ${passage.index} · characters ${fmtInt(passage.start)}–${fmtInt(passage.end)}`),
        h('span', { className: 'actions' }, more, toggle)),
      context);
  }

  /** Offers "Show all" on the folded passages whose text the fold cuts (known only once
   *  laid out). */
  function unfoldButtons() {
    for (const hit of $('hits').children) {
      const text = hit.querySelector('.passage-text');
      const button = hit.querySelector('.fold-toggle');
      if (text && button) button.hidden = text.scrollHeight <= text.clientHeight + 1;
    }
  }

  async function fetchDocument(collection, id) {
    const key = `${collection}\u0000${id}`;
    if (!state.documents.has(key)) {
      const pending = api('GET', `${collectionPath(collection)}/documents/${encodeURIComponent(id)}`);
      state.documents.set(key, pending);
      pending.catch(() => state.documents.delete(key));
    }
    return state.documents.get(key);
  }

  async function toggleContext(button, box, hit, collection, matches) {
    if (!box.hidden) {
      box.hidden = true;
      button.textContent = 'In context';
      return;
    }
    box.hidden = false;
    button.textContent = 'Hide context';
    if (box.dataset.loaded) return;
    box.replaceChildren(h('p', { className: 'muted' }, 'Loading the document…'));
    try {
      const doc = await fetchDocument(collection, hit.document_id);
      renderContext(box, doc, hit, matches, false);
      box.dataset.loaded = 'yes';
    } catch (e) {
      box.replaceChildren(h('div', { className: 'error-box inline' }, ...errorNode(e, 'reading the document')));
    }
  }

  const isSpace = (c) => /\s/u.test(c);

  /** Shows the passage inside its document: `CONTEXT_CHARS` around it, or all of it. */
  function renderContext(box, doc, hit, matches, whole) {
    if (typeof doc.text !== 'string') {
      box.replaceChildren(h('p', { className: 'note' }, 'This document has no stored text: it was written as a vector.'));
      return;
    }
    // The server counts Unicode characters (code points); JavaScript strings count UTF-16
    // units, which differ beyond the Basic Multilingual Plane (emoji, some CJK): index an
    // array of code points instead.
    const chars = Array.from(doc.text);
    const { start, end } = hit.passage;
    if (!(Number.isInteger(start) && Number.isInteger(end) && start <= end && end <= chars.length)) {
      box.replaceChildren(h('p', { className: 'note' }, 'The document has changed since this search: its text no longer holds this passage.'));
      return;
    }
    const passage = chars.slice(start, end).join('');
    let from = whole ? 0 : Math.max(0, start - CONTEXT_CHARS);
    let to = whole ? chars.length : Math.min(chars.length, end + CONTEXT_CHARS);
    // Cut the context at white space, so that it starts and ends with whole words.
    if (from > 0) {
      let i = from;
      while (i < start && !isSpace(chars[i])) i += 1;
      if (i < start) from = i + 1;
    }
    if (to < chars.length) {
      let i = to;
      while (i > end && !isSpace(chars[i - 1])) i -= 1;
      if (i > end) to = i - 1;
    }
    const body = h('div', { className: 'context-text' });
    if (from > 0) body.append(h('span', { className: 'ellipsis' }, '… '));
    appendHighlighted(body, chars.slice(from, start).join(''), matches);
    const mark = h('mark', { className: 'passage' });
    appendHighlighted(mark, passage, matches);
    body.append(mark);
    appendHighlighted(body, chars.slice(end, to).join(''), matches);
    if (to < chars.length) body.append(h('span', { className: 'ellipsis' }, ' …'));

    const complete = from === 0 && to === chars.length;
    const toggle = h('button', { type: 'button', className: 'link' }, whole ? 'Show less' : 'Show the whole document');
    toggle.addEventListener('click', () => renderContext(box, doc, hit, matches, !whole));
    const head = h('div', { className: 'context-head' },
      h('span', null, `${doc.id} · ${plural(chars.length, 'character', 'characters')} · ${plural(doc.passages, 'passage', 'passages')}`),
      complete && !whole ? null : toggle);
    const parts = [head];
    if (typeof hit.text === 'string' && hit.text !== passage) {
      parts.push(h('p', { className: 'note' }, 'The document has changed since this search: the highlighted span may not be the passage found.'));
    }
    parts.push(body);
    box.replaceChildren(...parts);
    if (whole) mark.scrollIntoView({ block: 'center' });
  }

  // ---------------------------------------------------------------------------------------
  // Start

  async function start() {
    clearError();
    if (!(await loadInfo())) return;
    await loadCollections();
  }

  function wire() {
    $('search-form').addEventListener('submit', search);
    $('collection').addEventListener('change', () => {
      clearError();
      clearResults();
      $('placeholder').hidden = false;
      $('placeholder').textContent = 'Type a query and press Enter.';
      selectCollection($('collection').value);
    });
    $('refresh').addEventListener('click', () => { clearError(); loadCollections(); });
    for (const id of ['mode-dense', 'mode-lexical', 'mode-hybrid', 'alpha', 'rerank', 'mmr', 'group']) {
      $(id).addEventListener('input', updateOptions);
      $(id).addEventListener('change', updateOptions);
    }
    $('filter').addEventListener('input', showFilterStatus);
    $('key-form').addEventListener('submit', submitKey);
    $('key-cancel').addEventListener('click', () => closeKeyPrompt(false));
    $('key-panel').addEventListener('keydown', (e) => { if (e.key === 'Escape') closeKeyPrompt(false); });
    $('key-button').addEventListener('click', async () => {
      if (await askForKey(state.key === null ? 'Enter the API key.' : 'Enter another API key.', false)) start();
    });
    // A bug in this script must show, not leave a page that silently does nothing.
    window.addEventListener('error', (e) => showError(pageError('page_error', e.message || 'script error')));
    window.addEventListener('unhandledrejection', (e) => showError(e.reason instanceof ApiError
      ? e.reason : pageError('page_error', String((e.reason && e.reason.message) || e.reason))));
    updateOptions();
    start();
  }

  wire();
})();
