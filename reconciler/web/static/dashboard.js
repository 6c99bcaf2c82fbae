/* kubernaut dashboard: client-side filters and live refresh for the executions page.
 *
 * Every value shown comes from execution files in Git and is untrusted: it only ever
 * reaches the page through textContent / setAttribute on elements built here, never
 * through innerHTML.  CSS classes are chosen from fixed lists, never from data.
 * The filter rules are the same as Filters.matches() in reconciler/service/dashboard.py.
 */
(function () {
  "use strict";

  var PHASES = ["Pending", "Running", "Completed", "Failed", "Skipped"];
  var HEALTHS = ["Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown"];
  var SYNCS = ["Synced", "OutOfSync", "Unknown"];
  var ALLOWED = { phase: PHASES, health: HEALTHS, sync: SYNCS };
  var FILTER_KEYS = ["phase", "health", "sync", "q"];
  var NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

  document.documentElement.classList.add("js");

  // -- helpers ------------------------------------------------------------------------

  function str(v) { return v === null || v === undefined ? "" : String(v); }
  function known(v, allowed, fallback) { return allowed.indexOf(v) >= 0 ? v : (fallback === undefined ? "Unknown" : fallback); }
  function validName(n) { return typeof n === "string" && n.length > 0 && n.length <= 63 && NAME_RE.test(n); }
  function isObject(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }

  function el(tag, className, text) {
    var e = document.createElement(tag);
    if (className) { e.className = className; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  // text with <wbr> break opportunities after "/" and "@" (like the |breakable template filter)
  function breakable(className, value) {
    var span = el("span", className), s = str(value), start = 0;
    for (var i = 0; i < s.length - 1; i++) {
      if (s[i] === "/" || s[i] === "@") {
        span.appendChild(document.createTextNode(s.slice(start, i + 1)));
        span.appendChild(el("wbr"));
        start = i + 1;
      }
    }
    if (start < s.length) { span.appendChild(document.createTextNode(s.slice(start))); }
    return span;
  }

  function badge(kind, value) {
    var v = str(value);
    return el("span", "badge " + kind + "-" + known(v, ALLOWED[kind]), v || "\u2014");
  }

  function short(sha) {
    var s = str(sha);
    return s.length >= 12 && /^[0-9a-f]+$/i.test(s) ? s.slice(0, 7) : s;
  }

  function when(v) {
    var s = str(v);
    if (!s) { return ""; }
    var d = new Date(s);
    return isNaN(d.getTime()) ? s : d.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  // -- filters --------------------------------------------------------------------------

  function filtersFrom(search) {
    var p = new URLSearchParams(search);
    function pick(key) { var v = p.get(key) || ""; return ALLOWED[key].indexOf(v) >= 0 ? v : ""; }
    return { phase: pick("phase"), health: pick("health"), sync: pick("sync"), q: (p.get("q") || "").slice(0, 200) };
  }

  function active(f) { return Boolean(f.phase || f.health || f.sync || f.q.trim()); }

  function matches(row, f) {
    if (f.phase && row.phase !== f.phase) { return false; }
    if (f.health && row.health !== f.health) { return false; }
    if (f.sync && row.sync !== f.sync) { return false; }
    var hay = ["name", "target", "workflow"].map(function (k) { return str(row[k]).toLowerCase(); });
    var labels = isObject(row.labels) ? row.labels : {};
    var pairs = Object.keys(labels).map(function (k) { return [k.toLowerCase(), str(labels[k]).toLowerCase()]; });
    var terms = f.q.toLowerCase().split(/\s+/).filter(Boolean);
    return terms.every(function (term) {
      if (hay.some(function (h) { return h.indexOf(term) >= 0; })) { return true; }
      var i = term.indexOf("=");
      if (i >= 0) {
        var key = term.slice(0, i), value = term.slice(i + 1);
        return pairs.some(function (p) { return p[0] === key && p[1] === value; });
      }
      return pairs.some(function (p) { return p[0].indexOf(term) >= 0 || p[1].indexOf(term) >= 0; });
    });
  }

  function queryString(f) {
    var p = new URLSearchParams();
    FILTER_KEYS.forEach(function (k) { if (f[k]) { p.set(k, f[k]); } });
    var qs = p.toString();
    return qs ? "?" + qs : "";
  }

  // -- the executions page ----------------------------------------------------------------

  function executionsPage(body) {
    var refreshMs = Math.max(100, parseInt(body.getAttribute("data-refresh-ms"), 10) || 5000);
    var tbody = document.getElementById("rows");
    var form = document.getElementById("filters");
    var controls = {
      phase: document.getElementById("f-phase"), health: document.getElementById("f-health"),
      sync: document.getElementById("f-sync"), q: document.getElementById("f-q")
    };
    var clear = document.getElementById("f-clear");
    var count = document.getElementById("result-count");
    var refreshState = document.getElementById("refresh-state");
    var rows = [];
    try {
      rows = JSON.parse(document.getElementById("executions-data").textContent || "[]");
    } catch (e) { rows = []; }
    if (!Array.isArray(rows)) { rows = []; }
    var filters = filtersFrom(window.location.search);
    var seen = {};        // name -> signature, to highlight rows that changed on refresh
    var rendered = null;  // signature of what is on screen
    var timer = null;

    function setControls() {
      FILTER_KEYS.forEach(function (k) { if (controls[k].value !== filters[k]) { controls[k].value = filters[k]; } });
    }

    function readControls() {
      return {
        phase: known(controls.phase.value, PHASES, ""), health: known(controls.health.value, HEALTHS, ""),
        sync: known(controls.sync.value, SYNCS, ""), q: controls.q.value.slice(0, 200)
      };
    }

    function syncUrl() {
      var url = window.location.pathname + queryString(filters) + window.location.hash;
      if (url !== window.location.pathname + window.location.search + window.location.hash) {
        window.history.replaceState(null, "", url);
      }
    }

    function cell(className) { return el("td", className); }

    function rowElement(r, flash) {
      var tr = el("tr");
      tr.setAttribute("data-name", str(r.name));
      if (flash) { tr.className = "flash"; }

      var name = cell("col-name");
      if (validName(r.name)) {
        var a = el("a", "name", r.name);
        a.setAttribute("href", "/executions/" + encodeURIComponent(r.name));
        name.appendChild(a);
      } else {
        name.appendChild(el("span", "name", str(r.name)));
      }
      if (str(r.message)) {
        var msg = el("div", "sub message", str(r.message));
        msg.setAttribute("title", str(r.message));
        name.appendChild(msg);
      }
      var labels = isObject(r.labels) ? r.labels : {};
      var keys = Object.keys(labels);
      if (keys.length) {
        var box = el("div", "labels");
        keys.forEach(function (k) { box.appendChild(el("span", "label", k + "=" + str(labels[k]))); });
        name.appendChild(box);
      }
      tr.appendChild(name);

      var target = cell("col-target");
      target.appendChild(breakable("mono", r.target));
      tr.appendChild(target);

      var workflow = cell("col-workflow");
      workflow.appendChild(breakable("mono", r.workflow));
      if (str(r.engine)) { workflow.appendChild(el("div", "sub", str(r.engine))); }
      tr.appendChild(workflow);

      var phase = cell("col-phase");
      phase.appendChild(badge("phase", r.phase));
      if (str(r.reason)) { phase.appendChild(el("div", "sub reason", str(r.reason))); }
      tr.appendChild(phase);

      var sync = cell("col-sync");
      sync.appendChild(badge("sync", r.sync));
      tr.appendChild(sync);

      var health = cell("col-health");
      health.appendChild(badge("health", r.health));
      tr.appendChild(health);

      tr.appendChild(el("td", "col-duration", str(r.duration) || "\u2014"));
      tr.appendChild(el("td", "col-age", str(r.age) || "\u2014"));

      var run = cell("col-run");
      if (str(r.run)) { run.appendChild(el("code", "", str(r.run))); } else { run.appendChild(el("span", "muted", "\u2014")); }
      tr.appendChild(run);
      return tr;
    }

    function render(highlight) {
      var valid = rows.filter(isObject);
      var signature = JSON.stringify([valid, filters]);
      if (signature === rendered) { return; }
      rendered = signature;
      var shown = valid.filter(function (r) { return matches(r, filters); });
      var out = shown.map(function (r) {
        var sig = JSON.stringify(r);
        var key = str(r.name);
        var changed = highlight && Object.prototype.hasOwnProperty.call(seen, key) && seen[key] !== sig;
        return rowElement(r, changed);
      });
      var next = {};
      valid.forEach(function (r) { next[str(r.name)] = JSON.stringify(r); });
      seen = next;
      if (!out.length) {
        var tr = el("tr", "empty");
        var td = el("td", "", valid.length ? "No executions match these filters." : "No executions are declared in this repository.");
        td.setAttribute("colspan", "9");
        tr.appendChild(td);
        out.push(tr);
      }
      tbody.replaceChildren.apply(tbody, out);
      count.textContent = shown.length + " of " + valid.length + " executions";
      clear.hidden = !active(filters);
      document.querySelectorAll("a.count[data-filter]").forEach(function (a) {
        var k = a.getAttribute("data-filter");
        a.classList.toggle("active", filters[k] === a.getAttribute("data-value"));
      });
    }

    function apply() {
      filters = readControls();
      syncUrl();
      render(false);
    }

    function renderSummary(s) {
      if (!isObject(s)) { return; }
      document.getElementById("repo-name").textContent = str(s.repository) || "\u2014";
      document.getElementById("repo-branch").textContent = str(s.branch) || "\u2014";
      var rev = document.getElementById("repo-revision");
      rev.textContent = short(s.revision) || "\u2014";
      rev.setAttribute("title", str(s.revision));
      var leader = document.getElementById("repo-leader");
      leader.textContent = s.leader ? "leader" : "standby";
      leader.className = s.leader ? "leader" : "standby";
      var gen = document.getElementById("repo-generated");
      gen.textContent = when(s.generatedAt) || "\u2014";
      gen.setAttribute("datetime", str(s.generatedAt));
      var health = document.getElementById("repo-health");
      health.textContent = str(s.health) || "Unknown";
      health.className = "badge badge-lg health-" + known(str(s.health), HEALTHS);
      document.querySelectorAll("[data-count]").forEach(function (n) {
        var parts = n.getAttribute("data-count").split(".");
        var group = isObject(s[parts[0]]) ? s[parts[0]] : {};
        n.textContent = str(group[parts[1]] || 0);
      });
    }

    function getJSON(url) {
      return window.fetch(url, { cache: "no-store", credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (!r.ok) { throw new Error(url + ": HTTP " + r.status); }
          return r.json();
        });
    }

    function schedule(ms) {
      if (timer !== null) { window.clearTimeout(timer); }
      timer = window.setTimeout(refresh, ms);
    }

    function refresh() {
      timer = null;
      if (document.hidden) { schedule(refreshMs); return; }
      Promise.all([getJSON("/api/executions"), getJSON("/api/summary")]).then(function (got) {
        if (!Array.isArray(got[0])) { throw new Error("unexpected answer from /api/executions"); }
        rows = got[0];
        render(true);
        renderSummary(got[1]);
        refreshState.textContent = "";
        refreshState.classList.remove("stale");
      }).catch(function () {
        refreshState.textContent = "cannot reach the dashboard \u2014 retrying";
        refreshState.classList.add("stale");
      }).then(function () { schedule(refreshMs); });
    }

    // wire up
    setControls();
    render(false);
    form.addEventListener("submit", function (e) { e.preventDefault(); apply(); });
    ["phase", "health", "sync"].forEach(function (k) { controls[k].addEventListener("change", apply); });
    controls.q.addEventListener("input", apply);
    clear.addEventListener("click", function (e) {
      e.preventDefault();
      filters = { phase: "", health: "", sync: "", q: "" };
      setControls();
      syncUrl();
      render(false);
    });
    document.querySelectorAll("a.count[data-filter]").forEach(function (a) {
      a.addEventListener("click", function (e) {
        e.preventDefault();
        var k = a.getAttribute("data-filter"), v = a.getAttribute("data-value");
        filters[k] = filters[k] === v ? "" : known(v, ALLOWED[k], "");
        setControls();
        syncUrl();
        render(false);
      });
    });
    window.addEventListener("popstate", function () {
      filters = filtersFrom(window.location.search);
      setControls();
      render(false);
    });
    document.addEventListener("keydown", function (e) {
      var t = e.target;
      var typing = t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA" || t.isContentEditable);
      if (e.key === "/" && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) {
        e.preventDefault();
        controls.q.focus();
        controls.q.select();
      }
    });
    document.addEventListener("visibilitychange", function () { if (!document.hidden) { schedule(0); } });
    schedule(refreshMs);
  }

  function start() {
    var body = document.body;
    if (body && body.getAttribute("data-page") === "executions") { executionsPage(body); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
