// The migrator console's page: live state by server-sent events (/events),
// questions to /api, the object graph drawn by cytoscape.js.  Every text
// that comes from the service is put in the page as text, never as HTML.
(function () {
  "use strict";

  var token = document.querySelector('meta[name="migrator-token"]').content;
  var state = { status: null, plan: null, graph: null, run: null, runSeq: 0,
                selection: [], selectionPlan: null, policy: null, layoutKey: null,
                expanded: {}, clicked: null };
  var cy = null;

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; }
      else if (k === "cls") { node.className = attrs[k]; }
      else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function short(cls) {
    if (!cls) { return "?"; }
    var parts = String(cls).split(".");
    return parts[parts.length - 1];
  }

  function when(seconds) {
    if (seconds === null || seconds === undefined) { return ""; }
    var d = new Date(seconds * 1000);
    return d.toLocaleString();
  }

  function api(path, options) {
    options = options || {};
    options.headers = Object.assign({ "X-Migrator-Token": token }, options.headers || {});
    options.credentials = "same-origin";
    return fetch(path, options).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(body.error || ("HTTP " + r.status)); }
        return body;
      });
    });
  }

  function post(path, body) {
    return api(path, { method: "POST", headers: { "Content-Type": "application/json" },
                       body: JSON.stringify(body || {}) });
  }

  // -- header, lineage ----------------------------------------------------------

  function renderStatus(s) {
    var moved = state.status && state.status.pid !== s.pid;
    state.status = s;
    if (moved) {
      // Connection and component ids belong to a process: a new one serves.
      state.expanded = {};
      clear($("details"));
      $("details").appendChild(el("p", { cls: "note", text: "A new process serves: click a node to see it." }));
      if (state.selection.length) {
        state.selection = [];
        renderComponents();
        refreshSelectionPlan();
        $("selection-summary").textContent = "A new process serves: the selection was cleared.";
      }
    }
    $("service").textContent = s.service + " \u2014 pid " + s.pid + ", generation " +
      s.generation + ", " + s.state + ", " + s.connections.open + " open connection(s)";
    if (state.policy === null && s.console) {
      state.policy = s.console.policy;
      $("policy").value = state.policy;
    }
    var body = $("lineage").tBodies[0];
    clear(body);
    (s.lineage || []).forEach(function (g) {
      var ended = g.ended ? (g.ended.how + " to pid " + g.ended.to +
                             (g.ended.at ? " at " + when(g.ended.at) : "")) : "";
      var now = g.pid === s.pid ? "serving" : (g.alive ? "draining" : (g.alive === false ? "exited" : ""));
      body.appendChild(el("tr", { "data-generation": g.generation }, [
        el("td", { text: String(g.generation) }), el("td", { text: String(g.pid) }),
        el("td", { text: g.python || "" }), el("td", { text: when(g.started) }),
        el("td", { text: ended }), el("td", { text: now })]));
    });
    var attempts = $("attempts");
    clear(attempts);
    (s.attempts || []).slice(-5).forEach(function (a) {
      var text = "takeover by pid " + a.successor_pid + ": " + a.outcome +
        (a.step ? " at step " + a.step : "") + (a.reason ? " \u2014 " + String(a.reason).split("\n")[0] : "");
      attempts.appendChild(el("div", { cls: "note", text: text }));
    });
    var command = s.console && s.console.command;
    $("command").textContent = command ? s.console.command_text :
      ("no successor command: " + ((s.console && s.console.command_problem) || "unknown"));
    var takeover = s.takeover;
    $("progress").textContent = takeover ? ("incumbent: takeover by pid " + takeover.successor_pid +
      " at step " + takeover.step + ", " + takeover.elapsed.toFixed(1) + " s") : "";
    renderDryRun(s.last_dry_run);
    renderRunButtons();
  }

  function renderDryRun(dry) {
    var box = $("dry-run");
    clear(box);
    if (!dry) {
      box.textContent = "last dry run: none yet";
      box.setAttribute("data-outcome", "");
      return;
    }
    box.setAttribute("data-outcome", dry.outcome);
    box.setAttribute("data-by", String(dry.by));
    box.appendChild(el("div", { cls: "summary " + (dry.outcome === "ok" ? "good" : "bad"),
      text: "last dry run: " + dry.outcome + " at " + when(dry.at) + ", by pid " + dry.by + ": " +
        dry.connections + " connection(s) snapshotted" + (dry.message ? " \u2014 " + dry.message : "") }));
    Object.keys(dry.classes || {}).sort().forEach(function (name) {
      var c = dry.classes[name];
      box.appendChild(el("div", { "data-class": name, text: short(name) + ": restored " + (c.restored || 0) +
        ", failed " + (c.failed || 0) + ", staying " + (c.staying || 0), title: name }));
    });
  }

  // -- plan ------------------------------------------------------------------------

  var OUTCOMES = ["move", "drain", "close", "refused"];

  function planRows(body, plan) {
    clear(body);
    plan.ports.forEach(function (port) {
      body.appendChild(el("tr", { cls: "port" }, [
        el("td", { colspan: "7", text: "port " + port.key + (port.address ? "  " + port.address : "") })]));
      if (!port.classes.length) {
        body.appendChild(el("tr", {}, [el("td", { colspan: "7", cls: "why", text: "no open connection" })]));
      }
      port.classes.forEach(function (c) {
        var why = el("td", { cls: "why" });
        (c.reasons || []).forEach(function (r) { why.appendChild(el("div", { text: r[1] + " \u00d7 " + r[0] })); });
        var cells = [el("td", { text: short(c["class"]), title: c["class"] }),
                     el("td", { cls: "n", text: String(c.total) })];
        OUTCOMES.forEach(function (o) {
          cells.push(el("td", { cls: "n " + (c[o] ? o : ""), text: c[o] ? String(c[o]) : "" }));
        });
        cells.push(why);
        body.appendChild(el("tr", { "data-class": c["class"] }, cells));
      });
    });
  }

  function planSummary(plan) {
    return plan.total + " open: " + OUTCOMES.map(function (o) { return plan[o] + " " + o; }).join(", ") +
      (plan.takeover_refused ? " \u2014 " + plan.message : "");
  }

  function renderPlan(plan) {
    state.plan = plan;
    if (plan.policy !== $("policy").value) { return refreshPlan(); }
    $("plan-summary").textContent = planSummary(plan);
    $("plan-summary").className = "summary " + (plan.takeover_refused ? "bad" : "good");
    planRows($("plan").tBodies[0], plan);
  }

  function refreshPlan() {
    var policy = $("policy").value;
    return api("/api/plan?policy=" + encodeURIComponent(policy)).then(function (plan) {
      state.plan = plan;
      renderPlan(plan);
      refreshSelectionPlan();
    }).catch(showProblem);
  }

  // -- selection --------------------------------------------------------------------

  function toggle(id, on) {
    var i = state.selection.indexOf(id);
    if (on && i < 0) { state.selection.push(id); }
    if (!on && i >= 0) { state.selection.splice(i, 1); }
    renderComponents();
    refreshSelectionPlan();
  }

  function refreshSelectionPlan() {
    $("clear-selection").disabled = !state.selection.length;
    if (!state.selection.length) {
      state.selectionPlan = null;
      $("selection-summary").textContent = "Nothing selected: every connection that can move moves.";
      $("selection-summary").className = "summary";
      clear($("selection-plan").tBodies[0]);
      clear($("split-points"));
      markGraph();
      renderRunButtons();
      return;
    }
    var url = "/api/plan?policy=" + encodeURIComponent($("policy").value) +
      "&select=" + encodeURIComponent(state.selection.join(","));
    api(url).then(function (plan) {
      var s = plan.selection;
      if (s.unknown.length) {
        // Ids of connections that closed (or of another process): dropped.
        state.selection = state.selection.filter(function (id) { return s.unknown.indexOf(id) < 0; });
        renderComponents();
        return refreshSelectionPlan();
      }
      state.selectionPlan = plan;
      var text = "Selected " + s.selected + " connection(s): " + planSummary(plan);
      if (s.kept_back) { text += "; " + s.kept_back + " selected kept back"; }
      if (s.blocked) { text += "; nothing would move: " + s.blocked; }
      $("selection-summary").textContent = text;
      $("selection-summary").className = "summary " + (plan.takeover_refused || s.blocked ? "bad" : "good");
      planRows($("selection-plan").tBodies[0], plan);
      var list = $("split-points");
      clear(list);
      s.split_points.forEach(function (p) {
        list.appendChild(el("li", { text: "the state would split at " + short(p["class"]) +
          (p.note ? " " + p.note : "") + " (" + p.kind + ", held by " + p.referrers + ")" }));
      });
      markGraph();
      renderRunButtons();
    }).catch(showProblem);
  }

  function renderComponents() {
    var graph = state.graph;
    var body = $("components").tBodies[0];
    clear(body);
    if (!graph) { return; }
    graph.components.forEach(function (c) {
      var box = el("input", { type: "checkbox", "data-component": c.id });
      box.checked = state.selection.indexOf(c.id) >= 0;
      box.addEventListener("change", function () { toggle(c.id, box.checked); });
      var classes = Object.keys(c.classes).map(function (k) { return c.classes[k] + " " + short(k); }).join(", ");
      body.appendChild(el("tr", { "data-component": c.id }, [
        el("td", {}, [box]), el("td", { text: c.id }),
        el("td", { cls: "n", text: String(c.connections) }), el("td", { text: classes }),
        el("td", { cls: "why", text: c.anchors.join(", ") })]));
    });
    (graph.groups || []).forEach(function (g) {
      var classes = Object.keys(g.classes).map(function (k) { return short(k); }).join(", ");
      body.appendChild(el("tr", {}, [el("td", {}), el("td", { cls: "why", text: "+" + g.components + " more" }),
        el("td", { cls: "n", text: String(g.connections) }), el("td", { text: classes }), el("td", {})]));
    });
  }

  // -- graph ---------------------------------------------------------------------------

  var STYLE = [
    { selector: "node", style: { "label": "data(label)", "font-size": 11, "color": "#1d2430",
        "text-valign": "bottom", "text-margin-y": 2, "width": 20, "height": 20,
        "background-color": "#3f9c5a", "border-width": 1, "border-color": "#fff" } },
    { selector: "node[kind = 'connection']", style: { "shape": "round-rectangle", "background-color": "#2456a6",
        "width": 30, "height": 16 } },
    { selector: "node[noadapter = 1]", style: { "background-color": "#d9534f" } },
    { selector: "node[kind = 'shared']", style: { "shape": "diamond", "background-color": "#e39b22" } },
    { selector: "node[kind = 'anchor']", style: { "shape": "hexagon", "background-color": "#7b8798",
        "width": 28, "height": 28 } },
    { selector: "node[kind = 'collapsed']", style: { "shape": "round-rectangle", "background-color": "#c8d3e6",
        "width": 44, "height": 22, "font-size": 10 } },
    { selector: ":parent", style: { "background-color": "#f3f6fb", "background-opacity": 1, "border-color": "#b7c3d6",
        "border-width": 1, "label": "data(label)", "text-valign": "top", "font-size": 11, "color": "#4a5568" } },
    { selector: ":parent.chosen", style: { "border-color": "#2456a6", "border-width": 3, "background-color": "#e6eefb" } },
    { selector: ".split", style: { "border-color": "#d9534f", "border-width": 3, "border-style": "dashed" } },
    { selector: ".kept", style: { "border-color": "#8a5a00", "border-width": 3 } },
    { selector: ".match", style: { "border-color": "#111", "border-width": 3 } },
    { selector: "node:selected", style: { "border-color": "#111", "border-width": 3 } },
    { selector: "edge", style: { "width": 1, "line-color": "#aab4c3", "target-arrow-shape": "triangle",
        "target-arrow-color": "#aab4c3", "arrow-scale": 0.6, "curve-style": "bezier" } }
  ];

  function elementsOf(graph) {
    var elements = [];
    var shown = {};
    graph.components.forEach(function (c) {
      var label = c.id + " (" + c.connections + " conn.)";
      if (c.expanded || state.expanded[c.id]) {
        elements.push({ data: { id: "comp:" + c.id, label: label, kind: "component", component: c.id } });
      } else {
        elements.push({ data: { id: "comp:" + c.id, label: label, kind: "collapsed", component: c.id } });
      }
      shown[c.id] = c.expanded || state.expanded[c.id];
    });
    (graph.groups || []).forEach(function (g, i) {
      elements.push({ data: { id: "group:" + i, kind: "collapsed", group: g,
        label: "+" + g.components + " components (" + g.connections + " conn.)" } });
    });
    var ids = {};
    graph.nodes.forEach(function (n) {
      if (n.component && !shown[n.component]) { return; }
      ids[n.id] = true;
      var label = n.kind === "connection" ? ((n.connection && n.connection.peer) || n.id) :
        (n.kind === "anchor" ? (n.note || short(n["class"])) :
          (n.kind === "shared" && n.note ? short(n["class"]) + " " + n.note.replace("held as ", "") :
            short(n["class"])));
      var data = { id: n.id, label: label, kind: n.kind, component: n.component, node: n,
                   noadapter: n.kind === "object" && !n.adapter ? 1 : 0 };
      if (n.component) { data.parent = "comp:" + n.component; }
      elements.push({ data: data });
    });
    graph.edges.forEach(function (e) {
      if (ids[e[0]] && ids[e[1]]) {
        elements.push({ data: { id: "e:" + e[0] + ">" + e[1], source: e[0], target: e[1] } });
      }
    });
    return elements;
  }

  function renderGraph(graph) {
    state.graph = graph;
    Object.keys(state.expanded).forEach(function (id) {
      var extra = state.expanded[id];
      if (extra && extra.nodes) { mergeExpansion(graph, extra); }
    });
    $("graph-summary").textContent = graph.connections + " connection(s), " + graph.objects +
      " object(s), " + (graph.components.length + (graph.more_components || 0)) + " component(s)" +
      (graph.truncated ? " (walk cut short)" : "");
    renderComponents();
    if (typeof cytoscape !== "function") { return; }
    var elements = elementsOf(graph);
    var key = elements.map(function (e) { return e.data.id; }).sort().join("|");
    if (!cy) {
      cy = cytoscape({ container: $("graph"), elements: elements, style: STYLE,
                       minZoom: 0.05, maxZoom: 4 });
      cy.on("tap", "node", function (evt) { showDetails(evt.target); });
      layout();
    } else if (key !== state.layoutKey) {
      cy.elements().remove();
      cy.add(elements);
      layout();
    } else {
      elements.forEach(function (e) { cy.getElementById(e.data.id).data(e.data); });
    }
    state.layoutKey = key;
    markGraph();
  }

  function mergeExpansion(graph, extra) {
    var have = {};
    graph.nodes.forEach(function (n) { have[n.id] = true; });
    extra.nodes.forEach(function (n) { if (!have[n.id]) { graph.nodes.push(n); } });
    graph.edges = graph.edges.concat(extra.edges);
    graph.components.forEach(function (c) { if (state.expanded[c.id]) { c.expanded = true; } });
  }

  function layout() {
    var count = cy.nodes().length;
    cy.layout(count > 600 ? { name: "grid", animate: false } :
      { name: "cose", animate: false, nodeRepulsion: 12000, idealEdgeLength: 45, nodeOverlap: 12,
        componentSpacing: 60, padding: 20, randomize: false }).run();
    fit();
  }

  function fit() {
    cy.fit(undefined, 20);
    if (cy.zoom() > 1.4) { cy.zoom(1.4); cy.center(); }
  }

  function markGraph() {
    if (!cy) { return; }
    cy.batch(function () {
      cy.elements().removeClass("split kept chosen");
      var plan = state.selectionPlan;
      state.selection.forEach(function (id) { cy.getElementById("comp:" + id).addClass("chosen"); });
      if (!plan) { return; }
      plan.selection.split_points.forEach(function (p) { cy.getElementById(p.id).addClass("split"); });
      Object.keys(plan.connections).forEach(function (id) {
        var c = plan.connections[id];
        if (c.kind === "moves" && c.outcome !== "move") { cy.getElementById(id).addClass("kept"); }
      });
    });
  }

  function row(name, value) {
    return el("tr", {}, [el("td", { text: name }), el("td", { text: value === null || value === undefined ? "" : String(value) })]);
  }

  function showDetails(node) {
    var data = node.data();
    var box = $("details");
    clear(box);
    state.clicked = data;
    if (data.group) {
      box.appendChild(el("h2", { text: data.group.components + " more components like this" }));
      box.appendChild(el("p", { cls: "note", text: "classes: " + Object.keys(data.group.classes).join(", ") }));
      var examples = el("div", { cls: "buttons" });
      data.group.examples.forEach(function (id) {
        var b = el("button", { type: "button", text: "expand " + id });
        b.addEventListener("click", function () { expand(id); });
        examples.appendChild(b);
      });
      box.appendChild(examples);
      return;
    }
    if (data.kind === "collapsed" || data.kind === "component") {
      var c = (state.graph.components || []).filter(function (x) { return x.id === data.component; })[0];
      box.appendChild(el("h2", { text: "component " + (data.component || data.label) }));
      if (c) {
        var t = el("table", {}, [row("connections", c.connections), row("objects", c.objects),
          row("classes", Object.keys(c.classes).map(function (k) { return c.classes[k] + " \u00d7 " + k; }).join(", ")),
          row("shares", c.anchors.join(", "))]);
        box.appendChild(t);
        var buttons = el("div", { cls: "buttons" });
        var chosen = state.selection.indexOf(c.id) >= 0;
        var sel = el("button", { type: "button", text: chosen ? "unselect component" : "select component to move" });
        sel.addEventListener("click", function () { toggle(c.id, !chosen); showDetails(node); });
        buttons.appendChild(sel);
        if (!c.expanded) {
          var more = el("button", { type: "button", text: "expand" });
          more.addEventListener("click", function () { expand(c.id); });
          buttons.appendChild(more);
        }
        box.appendChild(buttons);
      }
      return;
    }
    var n = data.node || {};
    box.appendChild(el("h2", { text: (n.kind === "connection" ? "connection " : "") + (n["class"] || "") }));
    var table = el("table", {}, [row("id", n.id), row("kind", n.kind),
      row("adapter", n.adapter ? n.adapter + " (version " + n.version + ")" : "none"),
      row("component", n.component), row("held by", n.referrers)]);
    if (n.note) { table.appendChild(row("note", n.note)); }
    if (n.connection) {
      var conn = n.connection;
      table.appendChild(row("port", conn.port));
      table.appendChild(row("peer", conn.peer));
      table.appendChild(row("age", conn.age === null ? "unknown" : conn.age.toFixed(1) + " s"));
      table.appendChild(row("bytes pending", conn.pending));
      var verdict = state.plan && state.plan.connections[n.id];
      if (verdict) { table.appendChild(row("plan", verdict.outcome + (verdict.reason ? ": " + verdict.reason : ""))); }
    }
    var shape = n.shape;
    if (shape && typeof shape === "object") {
      Object.keys(shape).forEach(function (k) { table.appendChild(row("." + k, shape[k])); });
    } else if (shape) {
      table.appendChild(row("state", shape));
    }
    box.appendChild(table);
    if (n.kind === "connection") {
      var b = el("button", { type: "button", text: state.selection.indexOf(n.id) >= 0 ?
        "unselect connection" : "select only this connection" });
      b.addEventListener("click", function () { toggle(n.id, state.selection.indexOf(n.id) < 0); showDetails(node); });
      box.appendChild(el("div", { cls: "buttons" }, [b]));
    }
  }

  function expand(id) {
    api("/api/graph?expand=" + encodeURIComponent(id)).then(function (extra) {
      state.expanded[id] = extra;
      renderGraph(state.graph);
    }).catch(showProblem);
  }

  function search() {
    if (!cy) { return; }
    var text = $("search").value.trim().toLowerCase();
    cy.elements().removeClass("match");
    if (!text) { return; }
    var found = cy.nodes().filter(function (n) {
      var d = n.data();
      var hay = [d.id, d.label, d.node && d.node["class"], d.node && d.node.connection && d.node.connection.peer]
        .join(" ").toLowerCase();
      return hay.indexOf(text) >= 0;
    });
    found.addClass("match");
    if (found.length) { cy.fit(found, 40); }
  }

  // -- run ----------------------------------------------------------------------------------

  function renderRun(run) {
    if (!run) { return; }
    if (!state.run || run.pid !== state.run.pid) {
      state.runSeq = 0; clear($("run-log")); clear($("run-report"));
    }
    state.run = run;
    var log = $("run-log");
    run.lines.forEach(function (l) {
      if (l[0] > state.runSeq) { log.appendChild(document.createTextNode(l[1] + "\n")); state.runSeq = l[0]; }
    });
    while (log.childNodes.length > 2000) { log.removeChild(log.firstChild); }
    log.scrollTop = log.scrollHeight;
    var kind = run.kind || "takeover";
    $("run-state").textContent = kind + " by pid " + run.pid + ": " + run.state +
      (run.exit !== null && run.exit !== undefined ? " (exit " + run.exit + ")" : "") +
      (run.message ? " \u2014 " + run.message : "");
    $("run-state").className = "summary " + (run.state === "committed" || run.state === "passed" ? "good" :
      (run.state === "running" ? "" : "bad"));
    $("run-state").setAttribute("data-state", run.state);
    $("run-state").setAttribute("data-kind", kind);
    $("run-report").textContent = (run.report || []).join("\n");
    renderRunButtons();
  }

  function renderRunButtons() {
    var running = state.run && state.run.state === "running";
    var command = state.status && state.status.console && state.status.console.command;
    $("start").disabled = !!running || !command;
    $("dry").disabled = !!running || !command;
    $("abort").disabled = !running;
    var chosen = state.selectionPlan ? state.selectionPlan.selection.selected + " connection(s)" :
      state.selection.length + " id(s)";
    var extra = " (--unmovable " + $("policy").value +
      (state.selection.length ? ", " + chosen + " selected" : "") + ")";
    $("start").textContent = "start takeover" + extra;
    $("dry").textContent = "dry run" + extra;
  }

  function start(dryRun) {
    $("start").disabled = true;
    $("dry").disabled = true;
    post("/api/run", { policy: $("policy").value, select: state.selection, dry_run: dryRun })
      .then(renderRun).catch(function (e) { showProblem(e); renderRunButtons(); });
  }

  function abort() {
    post("/api/abort", {}).then(function (r) { $("run-state").textContent = r.message; }).catch(showProblem);
  }

  // -- live ------------------------------------------------------------------------------------

  function showProblem(e) {
    var live = $("live");
    live.textContent = "problem: " + (e && e.message ? e.message : e);
    live.className = "live off";
  }

  function connect() {
    var source = new EventSource("/events");
    source.addEventListener("open", function () { $("live").textContent = "live"; $("live").className = "live"; });
    source.addEventListener("error", function () {
      $("live").textContent = "reconnecting\u2026"; $("live").className = "live off";
    });
    source.addEventListener("status", function (e) { renderStatus(JSON.parse(e.data)); });
    source.addEventListener("plan", function (e) { renderPlan(JSON.parse(e.data)); refreshSelectionPlan(); });
    source.addEventListener("graph", function (e) { renderGraph(JSON.parse(e.data)); });
    source.addEventListener("run", function (e) { renderRun(JSON.parse(e.data)); });
    source.addEventListener("problem", function (e) {
      var p = JSON.parse(e.data);
      if (p.message) { showProblem(p.message); } else { $("live").textContent = "live"; $("live").className = "live"; }
    });
  }

  $("policy").addEventListener("change", function () { refreshPlan(); renderRunButtons(); });
  $("clear-selection").addEventListener("click", function () {
    state.selection = []; renderComponents(); refreshSelectionPlan();
  });
  $("search").addEventListener("input", search);
  $("fit").addEventListener("click", function () { if (cy) { fit(); } });
  $("zoom-in").addEventListener("click", function () { if (cy) { cy.zoom(cy.zoom() * 1.3); } });
  $("zoom-out").addEventListener("click", function () { if (cy) { cy.zoom(cy.zoom() / 1.3); } });
  $("start").addEventListener("click", function () { start(false); });
  $("dry").addEventListener("click", function () { start(true); });
  $("abort").addEventListener("click", abort);
  window.migratorConsole = { state: state, cy: function () { return cy; }, toggle: toggle };
  connect();
}());
