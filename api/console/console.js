// Audit console: reads one client's ledger from the auditor routes (CSV, which carries
// prev_hash and hash per entry), recomputes the running balance and checks the hash
// chain in the browser, draws the balance over time as inline SVG.
// The auditor token lives in sessionStorage only; "#token=...&client=..." in the URL
// fragment sets it (the token is then removed from the address bar).
"use strict";

(function () {
  const TOKEN_KEY = "maas-auditor-token";
  const GENESIS_HASH = "0".repeat(64);
  const PAGE = 1000; // the route's maximum page
  const MAX_PAGES = 200; // 200 000 entries: beyond that, use `maas audit dump`
  const SVG_NS = "http://www.w3.org/2000/svg";
  const CLIENT_RE = /^[A-Za-z0-9._:-]{1,128}$/;

  const $ = (id) => document.getElementById(id);
  let current = null; // {client, entries}
  let loadSeq = 0; // ignore answers to superseded loads

  // --- token -------------------------------------------------------------------------

  function getToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (e) {
      return memoryToken;
    }
  }
  let memoryToken = "";
  function setToken(token) {
    memoryToken = token;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) {
      /* storage disabled: keep it in memory for this page */
    }
    $("token-state").textContent = token ? "token set (this tab only)" : "no token";
    $("token").value = "";
  }

  // --- status ------------------------------------------------------------------------

  function setStatus(state, text) {
    const el = $("status");
    el.className = "state-" + state;
    el.textContent = text;
    document.body.dataset.state = state;
  }

  function hideResults() {
    $("summary").hidden = true;
    $("chart").hidden = true;
    $("ledger").hidden = true;
    $("rows").replaceChildren();
    $("chart-box").replaceChildren();
    $("download").setAttribute("aria-disabled", "true");
    current = null;
  }

  // --- fetching ----------------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, detail) {
      super(detail || "HTTP " + status);
      this.status = status;
    }
  }

  async function fetchPage(client, cursor) {
    const url =
      "/v1/clients/" + encodeURIComponent(client) +
      "/ledger?format=csv&limit=" + PAGE + "&cursor=" + cursor;
    const response = await fetch(url, {
      headers: { Authorization: "Bearer " + getToken(), Accept: "text/csv" },
      cache: "no-store",
      credentials: "omit",
    });
    const text = await response.text();
    if (!response.ok) {
      let detail = "";
      try {
        const body = JSON.parse(text);
        detail = body.detail || body.error || "";
        if (typeof detail !== "string") detail = JSON.stringify(detail);
      } catch (e) {
        detail = text.slice(0, 200);
      }
      throw new HttpError(response.status, detail);
    }
    const next = response.headers.get("X-Next-Cursor");
    return { text, next: next === null ? null : Number(next) };
  }

  // All pages as CSV texts (each with its header line), in seq order.
  async function fetchAllCsv(client) {
    const pages = [];
    let cursor = 0;
    for (let n = 0; n < MAX_PAGES; n++) {
      const page = await fetchPage(client, cursor);
      pages.push(page.text);
      if (page.next === null || !(page.next > cursor)) return { pages, complete: true };
      cursor = page.next;
    }
    return { pages, complete: false };
  }

  // RFC 4180: quoted fields may hold commas, quotes ("") and newlines.
  function parseCsv(text) {
    const rows = [];
    let row = [];
    let field = "";
    let quoted = false;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (quoted) {
        if (c === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i++;
          } else {
            quoted = false;
          }
        } else {
          field += c;
        }
      } else if (c === '"') {
        quoted = true;
      } else if (c === ",") {
        row.push(field);
        field = "";
      } else if (c === "\n" || c === "\r") {
        if (c === "\r" && text[i + 1] === "\n") i++;
        row.push(field);
        rows.push(row);
        row = [];
        field = "";
      } else {
        field += c;
      }
    }
    if (field !== "" || row.length) {
      row.push(field);
      rows.push(row);
    }
    return rows;
  }

  function csvRecords(text) {
    const rows = parseCsv(text);
    if (!rows.length) return [];
    const header = rows[0];
    return rows.slice(1).filter((r) => r.length > 1).map((r) => {
      const rec = {};
      header.forEach((name, i) => (rec[name] = r[i] === undefined ? "" : r[i]));
      return rec;
    });
  }

  // --- the checks --------------------------------------------------------------------

  function delta(rec) {
    const tokens = Number(rec.tokens || 0);
    switch (rec.type) {
      case "TokensCredited":
      case "TokensRefunded":
        return tokens;
      case "TokensCharged":
        return -tokens;
      default:
        return 0; // AccountOpened, MemeRejected, MemeDelivered, SubscriptionChanged, PersonalDataErased, ApiKeyRotated
    }
  }

  function analyse(records) {
    let running = 0;
    let prev = null;
    return records.map((rec) => {
      const seq = Number(rec.seq);
      const amount = delta(rec);
      running += amount;
      let chain = "ok";
      let why = "prev_hash = hash of the previous entry";
      if (prev === null) {
        if (seq === 1 && rec.prev_hash !== GENESIS_HASH) {
          chain = "broken";
          why = "first entry does not start from the genesis hash";
        } else if (seq !== 1) {
          chain = "gap";
          why = "the ledger starts at seq " + seq;
        } else {
          why = "first entry: prev_hash is the genesis hash";
        }
      } else if (seq !== prev.seq + 1) {
        chain = "gap";
        why = "seq " + (prev.seq + 1) + " expected";
      } else if (rec.prev_hash !== prev.hash) {
        chain = "broken";
        why = "prev_hash is not the hash of seq " + prev.seq;
      }
      const entry = {
        seq,
        type: rec.type,
        occurredMs: Number(rec.occurred_at_ms),
        amount,
        balanceAfter: Number(rec.balance_after),
        running,
        chain,
        why,
        hash: rec.hash,
        ref: rec.purchase_id || rec.request_id || "",
        reason: rec.reason,
      };
      prev = entry;
      return entry;
    });
  }

  // --- rendering ---------------------------------------------------------------------

  function fmtTime(ms) {
    if (!Number.isFinite(ms)) return "";
    return new Date(ms).toISOString().replace("T", " ").replace("Z", "");
  }

  function fmtSigned(n) {
    return n > 0 ? "+" + n : String(n);
  }

  function td(text, cls) {
    const cell = document.createElement("td");
    if (cls) cell.className = cls;
    cell.textContent = text;
    return cell;
  }

  function renderTable(entries) {
    const body = $("rows");
    const frag = document.createDocumentFragment();
    for (const e of entries) {
      const tr = document.createElement("tr");
      tr.className = "entry" + (e.running !== e.balanceAfter ? " mismatch" : "");
      tr.dataset.seq = String(e.seq);
      tr.dataset.running = String(e.running);
      tr.dataset.balanceAfter = String(e.balanceAfter);
      tr.dataset.chain = e.chain;
      tr.append(
        td(String(e.seq), "num"),
        td(fmtTime(e.occurredMs)),
        td(e.type),
        td(e.amount ? fmtSigned(e.amount) : "0", "num " + (e.amount > 0 ? "pos" : e.amount < 0 ? "neg" : "")),
        td(String(e.balanceAfter), "num"),
        td(String(e.running), "num running"),
      );
      const chainCell = document.createElement("td");
      const mark = document.createElement("span");
      mark.className = "chain chain-" + e.chain;
      mark.textContent = e.chain;
      mark.title = e.why + (e.hash ? "\nhash " + e.hash : "");
      chainCell.append(mark);
      tr.append(chainCell, td(e.ref, "ref"));
      frag.append(tr);
    }
    body.replaceChildren(frag);
    $("ledger").hidden = false;
  }

  function svg(name, attrs, text) {
    const el = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function renderChart(entries) {
    const box = $("chart-box");
    $("chart").hidden = false; // shown first, so that the box has a width to measure
    // Drawn at the box's own width: one user unit is one CSS pixel, text is not stretched.
    const W = Math.max(400, Math.round(box.clientWidth) || 1100);
    const H = 240, L = 56, R = 16, T = 12, B = 30;
    const root = svg("svg", {
      viewBox: "0 0 " + W + " " + H,
      width: W,
      height: H,
      role: "img",
      "aria-label": "Balance over time",
    });
    const t0 = entries[0].occurredMs;
    const t1 = entries[entries.length - 1].occurredMs;
    const span = t1 > t0 ? t1 - t0 : 1;
    const top = niceMax(Math.max(...entries.map((e) => Math.max(e.running, e.balanceAfter))));
    const x = (ms) => L + ((ms - t0) / span) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const steps = [4, 5, 2].find((n) => top % n === 0) || 4; // whole-token ticks if possible
    for (let i = 0; i <= steps; i++) {
      const v = (top * i) / steps;
      root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      const label = Number.isInteger(v) ? String(v) : v.toFixed(1);
      root.append(svg("text", { class: "tick", x: L - 6, y: y(v) + 4, "text-anchor": "end" }, label));
    }
    root.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    root.append(svg("text", { class: "tick", x: L, y: H - 10, "text-anchor": "start" }, fmtTime(t0)));
    if (t1 > t0) {
      root.append(svg("text", { class: "tick", x: W - R, y: H - 10, "text-anchor": "end" }, fmtTime(t1)));
    }
    // A step line: the balance holds until the next entry moves it. With one instant
    // for all entries, the steps are spread evenly instead.
    const px = (e, i) => (t1 > t0 ? x(e.occurredMs) : L + (i / Math.max(1, entries.length - 1)) * (W - L - R));
    let d = "";
    entries.forEach((e, i) => {
      const xi = px(e, i);
      const yi = y(e.running);
      d += i === 0 ? "M" + xi + " " + yi : " H" + xi + " V" + yi;
    });
    d += " H" + (W - R);
    root.append(svg("path", { class: "balance-line", d }));
    entries.forEach((e, i) => {
      const dot = svg("circle", { class: "balance-point", cx: px(e, i), cy: y(e.running), r: 3.5 });
      dot.append(svg("title", {}, "seq " + e.seq + " " + e.type + " balance " + e.running));
      root.append(dot);
    });
    box.replaceChildren(root);
  }

  function renderSummary(client, entries, complete) {
    const last = entries[entries.length - 1];
    const broken = entries.filter((e) => e.chain !== "ok").length;
    const mismatched = entries.filter((e) => e.running !== e.balanceAfter).length;
    $("sum-client").textContent = client;
    $("sum-entries").textContent = entries.length + (complete ? "" : " (first pages only)");
    $("sum-balance").textContent = String(last.balanceAfter);
    $("sum-running").textContent =
      String(last.running) + (mismatched ? " (" + mismatched + " rows differ)" : "");
    $("sum-chain").textContent = broken ? broken + " entries broken" : "intact";
    $("summary").hidden = false;
    return { broken, mismatched };
  }

  // --- flows -------------------------------------------------------------------------

  async function load(client) {
    const mine = ++loadSeq;
    hideResults();
    if (!client) {
      setStatus("idle", getToken() ? "Enter a client id." : "Enter the auditor token and a client id.");
      return;
    }
    if (!CLIENT_RE.test(client)) {
      setStatus("error", "Not a client id: letters, digits and . _ : - only, up to 128 characters.");
      return;
    }
    if (!getToken()) {
      setStatus("empty", "Enter the auditor token first.");
      $("token").focus();
      return;
    }
    setStatus("loading", "Loading the ledger of " + client + " ...");
    let result;
    try {
      result = await fetchAllCsv(client);
    } catch (err) {
      if (mine !== loadSeq) return;
      showError(err, client);
      return;
    }
    if (mine !== loadSeq) return;
    const records = result.pages.flatMap(csvRecords);
    if (!records.length) {
      setStatus("empty", "No ledger entries for client " + client + ".");
      return;
    }
    const entries = analyse(records);
    current = { client, entries };
    const { broken, mismatched } = renderSummary(client, entries, result.complete);
    renderChart(entries);
    renderTable(entries);
    $("download").setAttribute("aria-disabled", "false");
    if (broken || mismatched) {
      setStatus(
        "error",
        entries.length + " entries; " + broken + " with a broken chain link, " +
          mismatched + " whose balance does not follow from the amounts.",
      );
    } else {
      setStatus(
        "ok",
        entries.length + " entries; hash chain intact; running balance matches every balance_after" +
          (result.complete ? "." : " (first " + entries.length + " entries only)."),
      );
    }
  }

  function showError(err, client) {
    if (err instanceof HttpError) {
      if (err.status === 401) {
        setStatus("error", "401: the auditor token was refused (" + err.message + "). Enter the auditor token.");
        $("token").focus();
      } else if (err.status === 404) {
        setStatus("empty", "Unknown client: no ledger entries for " + client + ".");
      } else if (err.status === 422) {
        setStatus("error", "422: the API rejected the client id (" + err.message + ").");
      } else {
        setStatus("error", "Error " + err.status + ": " + err.message);
      }
    } else {
      setStatus("error", "Could not reach the API: " + (err && err.message ? err.message : err));
    }
  }

  async function download(event) {
    event.preventDefault();
    if (!current) return;
    const client = current.client;
    const link = $("download");
    link.setAttribute("aria-disabled", "true");
    try {
      const result = await fetchAllCsv(client);
      // Keep the first page's header line only.
      const parts = result.pages.map((text, i) => (i === 0 ? text : text.slice(text.indexOf("\n") + 1)));
      const blob = new Blob(parts, { type: "text/csv;charset=utf-8" });
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = "ledger-" + client + ".csv";
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      showError(err, client);
    } finally {
      if (current && current.client === client) link.setAttribute("aria-disabled", "false");
    }
  }

  function readFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = params.get("token");
    const client = (params.get("client") || "").trim();
    if (token) {
      setToken(token);
      // The token leaves the address bar (and the history entry); the client stays.
      history.replaceState(null, "", location.pathname + location.search + (client ? "#client=" + encodeURIComponent(client) : ""));
    }
    return client;
  }

  function start() {
    $("token-state").textContent = getToken() ? "token set (this tab only)" : "no token";
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (!token) return;
      setToken(token);
      const client = $("client").value.trim();
      if (client) load(client);
      else setStatus("idle", "Enter a client id.");
    });
    $("forget").addEventListener("click", () => {
      setToken("");
      hideResults();
      setStatus("idle", "Token forgotten. Enter the auditor token and a client id.");
    });
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const client = $("client").value.trim();
      const hash = client ? "#client=" + encodeURIComponent(client) : "";
      if (location.hash !== hash) history.replaceState(null, "", location.pathname + location.search + hash);
      load(client);
    });
    $("download").addEventListener("click", download);
    window.addEventListener("hashchange", () => {
      const client = readFragment();
      if (client) {
        $("client").value = client;
        load(client);
      }
    });
    const client = readFragment();
    $("client").value = client;
    load(client);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
