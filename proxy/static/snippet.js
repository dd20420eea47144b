/* The relay's browser snippet: an analytics.js-like API that captures what only the browser knows
 * and posts it to the relay on the site's own origin. Readable source; scripts/build-snippet
 * minifies it into snippet.min.js (budget: 2.5 KB gzipped, checked by a test).
 *
 * The install tag leaves a queue in window.analytics (an array of [method, ...args] with .key and
 * .url set); this script replaces it with the API and replays the queued calls in order.
 *
 * Delivery: events close together go out in one text/plain POST (a "simple" request: no CORS
 * preflight), with fetch keepalive while the in-flight keepalive bytes stay under the browser's
 * 64 KB budget, and with sendBeacon when the page is hidden or unloading. What cannot be sent
 * now waits in a bounded localStorage queue of the page's own, resent (same messageIds) by that page,
 * or by the next page once its page is gone.
 */
((w, d) => {
  const stub = w.analytics;
  if (!stub || !stub.push || !stub.key) return; // no install tag, or loaded twice
  const key = stub.key;
  const url = stub.url + "/e";
  const nav = navigator;
  const loc = location;
  const now = () => Date.now();
  // Storage keys: neutral names, since filter lists match words such as "analytics" or "track".
  const ANON = "_fpa";
  const USER = "_fpu";
  const TRAITS = "_fpt";
  const CONSENT = "_fpc";
  const QUEUE = "_fpq"; // + the page's id; alone, the one queue of earlier snippets
  const LOCK = "_fpl";
  const PAUSE = "_fpw";
  const CLICKS = "_fpk";
  const HASH = "_fph";
  const CLICK_IDS = "gclid gbraid wbraid fbclid msclkid ttclid li_fat_id twclid".split(" ");
  const DAY_MS = 864e5;
  // The queue must never crowd the host page out of its own storage (5 MB per origin).
  const QUEUE_MAX_EVENTS = 200;
  const QUEUE_MAX_CHARS = 2e5;
  const QUEUE_MAX_AGE_MS = 7 * DAY_MS;
  const KEEPALIVE_BUDGET = 6e4; // Chromium refuses keepalive bodies past 64 KB in flight
  const BATCH_MAX_EVENTS = 20;
  const BATCH_WAIT_MS = 20; // long enough to catch calls made together, short enough to feel live
  const DRAIN_EVENTS = 50;
  const LOCK_SETTLE_MS = 99;
  const LEASE_MS = 9e4; // more than the longest backoff (a longer Retry-After: duplicates only)
  const LEASE_GRACE_MS = 1e4; // far longer than a write takes to reach another tab

  // Storage that never throws: blocked, full or sandboxed storage just forgets (a write then
  // answers undefined, else 1). No name: the names.
  const store = (area, name, value) => {
    try {
      const s = w[area];
      if (!name) return Object.keys(s);
      if (value === undefined) return JSON.parse(s.getItem(name));
      value === null ? s.removeItem(name) : s.setItem(name, JSON.stringify(value));
      return 1;
    } catch (e) {}
  };
  const local = (name, value) => store("localStorage", name, value);
  // A sandboxed frame throws on document.cookie: the snippet goes on without cookies.
  const jar = () => {
    try {
      return d.cookie;
    } catch (e) {
      return "";
    }
  };
  const setCookie = (text) => {
    try {
      d.cookie = text;
    } catch (e) {}
  };
  const cookie = (name) => (jar().match("(?:^|; )" + name + "=([^;]*)") || [])[1];

  // A random (v4) UUID: randomUUID would need a secure context; getRandomValues does not.
  const uuid = () =>
    "10000000-1000-4000-8000-100000000000".replace(/[018]/g, (c) =>
      (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16),
    );

  let anon;
  let user = local(USER);
  let hash = local(HASH); // the site's HMAC of the userId, when the relay verifies users
  // A script-set cookie is capped at 7 days by Safari; rewriting it on every visit keeps it alive
  // for regular visitors, and localStorage keeps the id where cookies are cleared.
  const remember = (id) => {
    anon = id || local(ANON) || cookie(ANON) || uuid();
    local(ANON, anon);
    setCookie(
      ANON + "=" + anon + ";path=/;max-age=31536000;samesite=lax" +
        (loc.protocol == "https:" ? ";secure" : ""),
    );
  };
  remember();

  // Click ids are read on landing and kept for the session: a blocker may strip them later, and
  // the landing URL is gone after the first navigation.
  let clicks = store("sessionStorage", CLICKS) || {};
  const params = new URLSearchParams(loc.search);
  CLICK_IDS.forEach((name) => {
    const value = params.get(name);
    if (value) clicks[name] = value;
  });
  store("sessionStorage", CLICKS, clicks);

  const context = () => {
    const campaign = {};
    new URLSearchParams(loc.search).forEach((value, name) => {
      if (name.indexOf("utm_") == 0 && name.length > 4 && value)
        campaign[name == "utm_campaign" ? "name" : name.slice(4)] = value;
    });
    const ga = cookie("_ga"); // GA1.1.<random>.<seconds>: the client id is the last two parts
    const consent = local(CONSENT);
    const c = {
      page: page(),
      screen: { width: screen.width, height: screen.height, density: w.devicePixelRatio },
      locale: nav.language,
      userAgent: nav.userAgent,
      library: { name: "relay-snippet", version: "1" },
    };
    try {
      c.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    } catch (e) {}
    if (Object.keys(campaign).length) c.campaign = campaign;
    if (Object.keys(clicks).length) c.clickIds = clicks;
    if (ga) c.ga = { client_id: ga.split(".").slice(-2).join(".") };
    // gtag's session cookie `_ga_<id>`: GS1.1.<sid>... or GS2.1.s<sid>$...: the sid joins the session
    const sid = (jar().match(/(?:^|; )_ga_\w+=GS\d\.\d\.s?(\d+)/) || [])[1];
    if (sid) (c.ga = c.ga || {}).session_id = +sid;
    if (cookie("_fbp")) c.fbp = cookie("_fbp");
    if (cookie("_fbc")) c.fbc = cookie("_fbc");
    if (consent) c.consent = { categoryPreferences: consent };
    if (hash) c.userHash = hash; // the relay checks it and takes it out
    // Global Privacy Control: the relay opts the event out of the categories its config names.
    if (nav.globalPrivacyControl) c.globalPrivacyControl = true;
    return c;
  };
  const page = () => ({
    path: loc.pathname,
    referrer: d.referrer,
    search: loc.search,
    title: d.title,
    url: loc.href.split("#")[0],
  });

  // --- sending ------------------------------------------------------------------------------

  let buffer = [];
  let timer = 0;
  let inflight = 0; // keepalive bytes not yet answered
  // No sends before this time (Retry-After or backoff), kept across pages: a relay that asked
  // for a pause should not get a retry from every page load meanwhile.
  let until = +local(PAUSE) || 0;
  let failures = 0;
  let draining = 0;
  let gone = 0; // the page is unloading (or in the back/forward cache)

  const body = (events) => JSON.stringify({ writeKey: key, batch: events, sentAt: new Date().toISOString() });

  // Resolves true when the events are settled (accepted, or refused for good: a 4xx other than
  // 408/429 would fail forever, and the developer is told why), false when they must wait (and
  // until is set).
  const post = (events, keepalive) => {
    const data = body(events);
    const size = new Blob([data]).size;
    keepalive = keepalive && inflight + size < KEEPALIVE_BUDGET;
    if (keepalive) inflight += size;
    const wait = (retryAfter) => {
      const ms = +retryAfter * 1e3 || Date.parse(retryAfter) - now();
      local(PAUSE, (until = now() + (ms > 0 ? ms : Math.min(1e3 * 2 ** failures++, 6e4))));
      later();
    };
    return fetch(url, { method: "POST", body: data, keepalive })
      .then(
        (r) => {
          const s = r.status;
          if (s == 408 || s == 429 || s > 499) return wait(r.headers.get("Retry-After"));
          if (s > 399)
            r.text().then((why) => console.warn("analytics: events not sent:", s, why), () => {});
          failures = until = 0;
          return 1;
        },
        // A page that navigates away aborts its keepalive fetches in JS only: the browser still
        // delivers them, so saving them here would send them twice.
        () => (keepalive && gone) || wait(),
      )
      .finally(() => keepalive && (inflight -= size));
  };

  // The bounded localStorage queues. A save is read-modify-write, and a tab in another process
  // sees a write late (even under a lock): two tabs saving to one key erased each other's events.
  // So each page writes only a key of its own (QUEUE + a random id), and only until LEASE_MS after
  // its last write; at pagehide it gives the key up. A key given up, or LEASE_GRACE_MS past its
  // lease (its page died, or sat idle), is taken over by the next page that drains: merged into
  // that page's own key, one page at a time. A page that finds its lease over starts a new key.
  let qid;
  let lease = 0;
  let queue = []; // what the page's key holds: the page is its one writer
  const queues = () => (local() || []).filter((k) => !k.indexOf(QUEUE));
  // Newest kept, duplicates (same messageId) merged, the sent and the old dropped, the oldest
  // (by timestamp) first out when over the caps.
  const save = (events, sent = []) => {
    // Past its lease the key is written no more: a new one. The old key is taken over by the first
    // page to drain after the grace: this one at the latest (a drain is due then).
    if (now() > lease) (qid = QUEUE + uuid()), (queue = []), setTimeout(drain, LEASE_GRACE_MS + 9);
    const seen = {};
    sent.forEach((e) => (seen[e.messageId] = 1));
    const q = (queue = queue
      .concat(events)
      .filter((e) => !seen[e.messageId] && (seen[e.messageId] = 1) && Date.parse(e.timestamp) > now() - QUEUE_MAX_AGE_MS)
      .sort((a, b) => Date.parse(a.timestamp) - Date.parse(b.timestamp)));
    while (q.length > QUEUE_MAX_EVENTS || JSON.stringify(q).length > QUEUE_MAX_CHARS) q.shift();
    lease = gone ? 0 : now() + LEASE_MS;
    return local(qid, q.length ? { x: lease, q } : null);
  };
  // A key given up or past its lease and grace: its page writes it no more, and its last write has
  // had the grace to reach this tab, so the copy read here is whole.
  const adopt = () => {
    let events = [];
    const taken = queues().filter((k) => {
      const v = local(k) || {};
      return !(v.x > now() - LEASE_GRACE_MS) && (events = events.concat(v.q || v));
    });
    // The keys go once their events are saved: cut off between, the events are sent twice.
    save(events) && taken.forEach((k) => local(k, null));
  };

  // One page at a time takes queues over, under a Web Lock (released when the tab dies), after
  // waiting for the last holder's writes to reach this tab. The lock only spares duplicates (two
  // pages taking one queue over both send it; the relay answers a repeated messageId and keeps
  // one), so a browser without Web Locks (before 2022) goes without.
  const exclusive = (work) =>
    nav.locks
      ? nav.locks.request(LOCK, { ifAvailable: true }, (lock) => lock && new Promise((done) => setTimeout(done, LOCK_SETTLE_MS)).then(work))
      : work();

  const later = () => setTimeout(drain, until - now() + 9);
  // Not keepalive: a drain cut off by an unload leaves its events queued for the next page.
  // During a pause it only takes queues over: page views then leave no key each behind.
  const drain = () => {
    if (draining || !queues().length) return;
    draining = 1;
    const step = () => {
      const part = queue.slice(0, DRAIN_EVENTS);
      return part.length && post(part).then((ok) => ok && (save([], part), step()));
    };
    // save() first: the page sends from memory only the queue of a key still its own.
    Promise.resolve(exclusive(adopt))
      .then(() => now() < until || step(save([])))
      .finally(() => (draining = 0));
  };

  const send = (events, unloading) => {
    if (now() < until || !nav.onLine) return save(events);
    if (unloading) return nav.sendBeacon(url, body(events)) || save(events);
    if (inflight + new Blob([body(events)]).size >= KEEPALIVE_BUDGET) {
      // Past the keepalive budget a fetch would die with the page: the queue carries it instead.
      save(events);
      return setTimeout(drain);
    }
    post(events, 1).then((ok) => (ok ? drain() : save(events)));
  };

  const flush = (unloading) => {
    clearTimeout(timer);
    timer = 0;
    if (buffer.length) send(buffer.splice(0), unloading);
  };

  const enqueue = (type, fields, options) => {
    options = options || {};
    const e = Object.assign(
      {
        type,
        messageId: uuid(),
        timestamp: new Date().toISOString(),
        anonymousId: anon,
        context: Object.assign(context(), options.context),
      },
      user && { userId: user },
      options.integrations && { integrations: options.integrations },
      fields,
    );
    try {
      JSON.stringify(e);
    } catch (x) {
      // A BigInt or a cycle in its properties: this event alone cannot be sent. Thrown later,
      // it would take its whole batch down, or throw into the page from a later track().
      return console.warn("analytics: event not sent:", x);
    }
    buffer.push(e);
    if (buffer.length >= BATCH_MAX_EVENTS) flush();
    else timer = timer || setTimeout(flush, BATCH_WAIT_MS);
  };

  // Hidden may be the last chance (mobile browsers kill hidden tabs): a keepalive fetch outlives
  // the tab too, and while the page lives its answer is read (a beacon's is not: a 503 lost the
  // events). pagehide is the unload: the beacon.
  d.addEventListener("visibilitychange", () => d.visibilityState == "hidden" && flush());
  w.addEventListener("pagehide", () => save([], flush((gone = 1)))); // and the page's queue given up
  w.addEventListener("pageshow", () => (gone = 0)); // back from the back/forward cache
  w.addEventListener("online", drain);

  // --- the API ------------------------------------------------------------------------------

  const api = {
    key, // a second run of the install tag sees it and stops
    // As analytics.js: page([category], [name], [properties], [options]).
    page(category, name, properties, options) {
      if (typeof name != "string")
        (options = properties), (properties = name), (name = category), (category = undefined);
      if (name && typeof name == "object")
        (options = properties), (properties = name), (name = undefined);
      const fields = { properties: Object.assign(page(), properties) };
      if (name) fields.name = fields.properties.name = name;
      if (category) fields.category = fields.properties.category = category;
      enqueue("page", fields, options);
    },
    track(event, properties, options) {
      enqueue("track", { event, properties: properties || {} }, options);
    },
    identify(id, traits, options) {
      if (id && typeof id == "object") (options = traits), (traits = id), (id = user);
      // The hash and the traits go with their user: kept for the same user (or identify(traits)),
      // else replaced. Merged across users, a shared browser's next identify carried the last
      // person's email, and the relay remembers an identify's traits for the user it names.
      traits = Object.assign(((!id || id == user) && local(TRAITS)) || {}, traits);
      if (id) local(HASH, (hash = (options || {}).userHash || (id == user && hash) || null)), local(USER, (user = "" + id));
      local(TRAITS, traits);
      enqueue("identify", { traits }, options);
    },
    group(groupId, traits, options) {
      enqueue("group", { groupId: "" + groupId, traits: traits || {} }, options);
    },
    alias(to, from, options) {
      enqueue("alias", { userId: "" + to, previousId: "" + (from || user || anon) }, options);
    },
    reset() {
      [USER, TRAITS, ANON, HASH].forEach((name) => local(name, null));
      user = hash = undefined;
      // The next user on this tab must not inherit this one's ad clicks.
      store("sessionStorage", CLICKS, (clicks = {}));
      setCookie(ANON + "=;path=/;max-age=0");
      remember(uuid());
    },
    consent(categories) {
      local(CONSENT, Object.assign(local(CONSENT) || {}, categories));
    },
    ready(callback) {
      setTimeout(callback);
    },
  };
  w.analytics = api;
  stub.forEach((call) => api[call[0]] && api[call[0]].apply(api, call.slice(1)));
  drain(), later(); // the queues left by earlier pages: taken over now, sent now or when the pause ends
})(window, document);
