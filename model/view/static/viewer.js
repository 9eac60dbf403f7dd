// lymph view: slide list + OpenSeadragon viewer of a slide, its tumor map (colour-mapped,
// thresholded server-side at one of the offered thresholds, opacity client-side), detections,
// ground truth and suggested regions. Data comes from <script> files (data/site.js,
// data/slides/<id>.js) so that a static export works from file://. Every string from the data is
// inserted with textContent, never as HTML.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const STATUS = { hit: "hit", fp: "false positive", dup: "ignored (lesion already hit)",
    itc: "ignored (isolated tumor cells)" };
  const SHORT = { hit: "hit", fp: "FP", dup: "dup", itc: "ITC" };
  const INFERNO = ["#000004", "#57106e", "#bc3754", "#f98e09", "#fcffa4"];
  const $ = (id) => document.getElementById(id);
  const state = {
    site: window.LYMPH_SITE || { slides: [], problems: ["data/site.js did not load"] },
    id: null, data: null, viewer: null, item: null, mapItem: null, svg: null, shapes: null,
    markers: [], threshold: 50, opacity: 60, showMap: true, mapLoading: 0,
  };

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.onload = () => { s.remove(); resolve(); };
      s.onerror = () => { s.remove(); reject(new Error("cannot load " + src)); };
      document.head.appendChild(s);
    });
  }

  // --- slide list -----------------------------------------------------------------------------
  function frocText(f) {
    if (!f) return ["", "no ground truth or detections"];
    if (f.pending) return ["…", "computing"];
    if (f.error) return ["!", f.error];
    return [`${f.lesions_hit}/${f.lesions}, ${f.false_positives} FP`,
      `${f.lesions_hit} lesion(s) hit, ${f.missed} missed, ${f.false_positives} false ` +
      `positive(s) of ${f.detections} detection(s)`];
  }

  function renderList() {
    const body = $("slides").tBodies[0];
    body.replaceChildren();
    for (const s of state.site.slides) {
      const tr = el("tr");
      tr.dataset.id = s.id;
      if (s.id === state.id) tr.className = "current";
      const name = el("td", s.name);
      if (s.status) name.title = s.status;
      tr.appendChild(name);
      if (s.error) {
        const short = s.error.replace(/^.*?: (cannot|no such|dangling)/, "$1");
        const td = el("td", "error: " + short.slice(0, 160), "err");
        td.title = s.error;
        td.colSpan = 2;
        tr.appendChild(td);
      } else {
        tr.appendChild(el("td", s.score === null ? "" : s.score.toFixed(3)));
        const [text, title] = frocText(s.froc);
        const td = el("td", text);
        td.title = title;
        tr.appendChild(td);
      }
      tr.addEventListener("click", () => { location.hash = "slide=" + encodeURIComponent(s.id); });
      body.appendChild(tr);
    }
    $("problems").replaceChildren(...(state.site.problems || []).map((p) => el("div", p, "error")));
    $("mode").textContent = state.site.mode === "export" ? "(static export)" : "";
  }

  function refreshSite() {
    if (state.site.mode !== "server" || !state.site.froc_pending) return;
    setTimeout(() => {
      loadScript("data/site.js?r=" + Date.now()).then(() => {
        state.site = window.LYMPH_SITE;
        renderList();
        if (!state.site.froc_pending && state.data && state.data.froc_pending) reloadData();
        refreshSite();
      }).catch(refreshSite);
    }, 2000);
  }

  function reloadData() {  // the FROC statuses arrived after the slide's data: redraw
    const id = state.id;
    loadScript(`data/slides/${encodeURIComponent(id)}.js?r=${Date.now()}`).then(() => {
      if (state.id !== id || !state.item) return;
      state.data = window.LYMPH_SLIDES[id];
      drawShapes();
    }).catch(() => {});
  }

  // --- viewer ---------------------------------------------------------------------------------
  function source(layer, dz, ext) {
    const id = encodeURIComponent(state.id);
    return {
      width: dz.width, height: dz.height, tileSize: dz.tile, tileOverlap: 0,
      minLevel: 0, maxLevel: dz.max_level,
      getTileUrl: (level, x, y) => `tiles/${id}/${layer}_files/${level}/${x}_${y}.${ext}`,
    };
  }

  function makeViewer() {
    const viewer = OpenSeadragon({
      element: $("osd"), prefixUrl: "static/images/", drawer: "canvas",
      showNavigator: true, navigatorPosition: "TOP_RIGHT", showRotationControl: false,
      maxZoomPixelRatio: 2, visibilityRatio: 0.5, animationTime: 0.5,
      crossOriginPolicy: false, timeout: 60000,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
    });
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "lymph-overlay");
    state.shapes = document.createElementNS(SVG, "g");
    state.markerLayer = document.createElementNS(SVG, "g");
    svg.append(state.shapes, state.markerLayer);
    viewer.canvas.appendChild(svg);
    state.svg = svg;
    for (const ev of ["animation", "update-viewport", "resize", "open"]) {
      viewer.addHandler(ev, updateOverlay);
    }
    new OpenSeadragon.MouseTracker({
      element: viewer.canvas,
      moveHandler: (e) => {
        if (!state.item) return;
        const p = state.item.viewerElementToImageCoordinates(e.position);
        const w = state.data.info.width, h = state.data.info.height;
        $("cursor").textContent = (p.x >= 0 && p.y >= 0 && p.x < w && p.y < h)
          ? `x ${Math.floor(p.x)}, y ${Math.floor(p.y)} px (level 0)` : "";
      },
    });
    return viewer;
  }

  function updateOverlay() {
    const item = state.item;
    if (!item) return;
    const o = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const q = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(10000, 0));
    const s = (q.x - o.x) / 10000;
    state.shapes.setAttribute("transform", `matrix(${s} 0 0 ${s} ${o.x} ${o.y})`);
    for (const m of state.markers) {
      const x = o.x + m.x * s, y = o.y + m.y * s;
      m.circle.setAttribute("cx", x);
      m.circle.setAttribute("cy", y);
      if (m.label) { m.label.setAttribute("x", x + 11); m.label.setAttribute("y", y + 4); }
    }
    updateScaleBar(s);
  }

  function updateScaleBar(s) {
    const mpp = state.data && state.data.info.mpp;
    const bar = $("scalebar");
    if (!mpp || !(s > 0)) { bar.hidden = true; return; }
    bar.hidden = false;
    const target = 150 * mpp / s;  // um in 150 screen px
    const base = Math.pow(10, Math.floor(Math.log10(target)));
    const len = [5, 2, 1].map((m) => m * base).find((v) => v <= target) || base;
    $("scalebar-line").style.width = `${Math.round(len * s / mpp)}px`;
    $("scalebar-label").textContent = len >= 1000 ? `${len / 1000} mm` : `${len} µm`;
  }

  function poly(points, cls) {
    const p = document.createElementNS(SVG, "polygon");
    p.setAttribute("points", points.map((xy) => xy.join(",")).join(" "));
    p.setAttribute("class", cls);
    return p;
  }

  function drawShapes() {
    const d = state.data;
    state.shapes.replaceChildren();
    state.markerLayer.replaceChildren();
    state.markers = [];
    const notes = [];
    const truth = document.createElementNS(SVG, "g");
    truth.id = "layer-truth";
    if (d.truth && d.truth.error) notes.push("ground truth: " + d.truth.error);
    else if (d.truth) {
      d.truth.tumor.forEach((pts) => truth.appendChild(poly(pts, "truth")));
      d.truth.holes.forEach((pts) => truth.appendChild(poly(pts, "hole")));
      for (const [x0, y0, x1, y1] of d.missed_lesions || []) {
        const r = document.createElementNS(SVG, "rect");
        r.setAttribute("x", x0); r.setAttribute("y", y0);
        r.setAttribute("width", x1 - x0); r.setAttribute("height", y1 - y0);
        r.setAttribute("class", "missed");
        const t = document.createElementNS(SVG, "title");
        t.textContent = "lesion no detection hit";
        r.appendChild(t);
        truth.appendChild(r);
      }
      if (d.missed_lesions && d.missed_lesions.length) {
        notes.push(`${d.missed_lesions.length} lesion(s) missed (red boxes)`);
      }
      notes.push(`ground truth: ${d.truth.source} (${d.truth.tumor.length} outline(s))`);
    } else notes.push("no ground truth");
    const sug = document.createElementNS(SVG, "g");
    sug.id = "layer-suggestions";
    if (d.suggestions && d.suggestions.error) notes.push("suggestions: " + d.suggestions.error);
    else if (d.suggestions) {
      for (const r of d.suggestions) {
        if (r.polygon) {
          const p = poly(r.polygon, "sug");
          const t = document.createElementNS(SVG, "title");
          t.textContent = `${r.name || "suggested region"}${r.score === null ? "" : " " + r.score}`;
          p.appendChild(t);
          sug.appendChild(p);
        }
      }
      notes.push(`${d.suggestions.length} suggested region(s)`);
    }
    state.shapes.append(truth, sug);
    const dets = document.createElementNS(SVG, "g");
    dets.id = "layer-detections";
    const list = $("detections").tBodies[0];
    list.replaceChildren();
    if (d.detections && d.detections.error) notes.push("detections: " + d.detections.error);
    else if (d.detections) {
      const labelled = d.detections.length <= 200;
      d.detections.forEach((det, i) => {
        const c = document.createElementNS(SVG, "circle");
        c.setAttribute("r", 9);
        c.setAttribute("class", det.status || "unscored");
        const t = document.createElementNS(SVG, "title");
        t.textContent = `detection ${i + 1}: p = ${det.p} at (${det.x}, ${det.y})` +
          (det.status ? `: ${STATUS[det.status]}` : "");
        c.appendChild(t);
        dets.appendChild(c);
        let label = null;
        if (labelled) {
          label = document.createElementNS(SVG, "text");
          label.textContent = det.p.toFixed(2);
          label.setAttribute("class", det.status || "unscored");
          dets.appendChild(label);
        }
        state.markers.push({ x: det.x, y: det.y, circle: c, label });
        if (i < 100) {
          const tr = el("tr");
          tr.append(el("td", i + 1), el("td", det.p.toFixed(3)), el("td", `${det.x}, ${det.y}`),
            el("td", det.status ? SHORT[det.status] : ""));
          tr.addEventListener("click", () => zoomTo(det.x, det.y));
          list.appendChild(tr);
        }
      });
      notes.push(`${d.detections.length} detection(s)`);
    } else notes.push("no detections (S.csv)");
    state.markerLayer.appendChild(dets);
    $("notes").replaceChildren(...notes.map((n) => el("div", n)));
    applyVisibility();
    updateOverlay();
  }

  function zoomTo(x, y) {
    const r = 1024;
    state.viewer.viewport.fitBounds(state.item.imageToViewportRectangle(x - r, y - r, 2 * r, 2 * r));
  }

  function applyVisibility() {
    const show = (id, on) => { const g = document.getElementById(id); if (g) g.style.display = on ? "" : "none"; };
    show("layer-truth", $("show-truth").checked);
    show("layer-detections", $("show-detections").checked);
    show("layer-suggestions", $("show-suggestions").checked);
    state.showMap = $("show-map").checked;
    if (state.mapItem) state.mapItem.setOpacity(state.showMap ? state.opacity / 100 : 0);
    $("threshold-value").textContent = (state.threshold / 100).toFixed(1);
    $("opacity-value").textContent = `${state.opacity}%`;
    const t = state.threshold / 100;
    $("legend").style.background = `linear-gradient(to right, #fff 0 ${t * 100}%, ` +
      INFERNO.map((c, i) => `${c} ${(t + (1 - t) * i / 4) * 100}%`).join(", ") + ")";
  }

  function setMap() {
    const info = state.data.info;
    if (!info.map) return;
    const old = state.mapItem;
    state.mapLoading += 1;
    const t = String(state.threshold).padStart(2, "0");
    state.viewer.addTiledImage({
      tileSource: source(`map_t${t}`, info.map, "png"), x: 0, y: 0,
      width: info.map.world_width, opacity: state.showMap ? state.opacity / 100 : 0,
      success: (e) => {
        state.mapLoading -= 1;
        if (old) state.viewer.world.removeItem(old);
        state.mapItem = e.item;
      },
      error: () => { state.mapLoading -= 1; },
    });
  }

  async function openSlide(id) {
    state.id = id;
    renderList();
    $("empty").hidden = true;
    $("controls").hidden = false;
    $("title").textContent = id;
    $("slide-error").textContent = "";
    if (!(window.LYMPH_SLIDES && window.LYMPH_SLIDES[id])) {
      try { await loadScript(`data/slides/${encodeURIComponent(id)}.js`); }
      catch (err) { $("slide-error").textContent = String(err.message); return; }
    }
    if (state.id !== id) return;
    state.data = window.LYMPH_SLIDES[id];
    const info = state.data.info;
    $("title").textContent = info.name;
    if (info.error || !info.slide) {
      $("slide-error").textContent = info.error || "cannot be shown";
      if (state.viewer) state.viewer.close();
      state.item = state.mapItem = null;
      return;
    }
    if (info.map_error) $("slide-error").textContent = "tumor map: " + info.map_error;
    if (!state.viewer) state.viewer = makeViewer();
    state.item = state.mapItem = null;
    state.viewer.addOnceHandler("open", () => {
      state.item = state.viewer.world.getItemAt(0);
      drawShapes();
      setMap();
    });
    state.viewer.open({ tileSource: source("slide", info.slide, "jpeg") });
    $("show-map").disabled = $("threshold").disabled = $("opacity").disabled = !info.map;
  }

  function route() {
    const m = /slide=([^&]*)/.exec(location.hash);
    if (m) openSlide(decodeURIComponent(m[1]));
  }

  // --- controls -------------------------------------------------------------------------------
  $("threshold").addEventListener("input", (e) => {
    state.threshold = Number(e.target.value);
    applyVisibility();
  });
  $("threshold").addEventListener("change", () => { if (state.data) setMap(); });
  $("opacity").addEventListener("input", (e) => {
    state.opacity = Number(e.target.value);
    applyVisibility();
  });
  for (const id of ["show-map", "show-truth", "show-detections", "show-suggestions"]) {
    $(id).addEventListener("change", applyVisibility);
  }
  window.addEventListener("hashchange", route);

  // For tests and scripts: whether every image has all its tiles and the view is still.
  window.lymphView = {
    state,
    ready() {
      const v = state.viewer;
      if (!v || !state.item || state.mapLoading > 0) return false;
      if (state.data.info.map && !state.mapItem) return false;
      for (let i = 0; i < v.world.getItemCount(); i++) {
        if (!v.world.getItemAt(i).getFullyLoaded()) return false;
      }
      return Math.abs(v.viewport.getZoom(true) - v.viewport.getZoom(false)) < 1e-9;
    },
    toScreen(x, y) {  // level-0 px -> page px
      const p = state.item.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
      const r = state.viewer.element.getBoundingClientRect();
      return [r.left + p.x, r.top + p.y];
    },
    zoomTo,
  };

  state.threshold = Number($("threshold").value);
  state.opacity = Number($("opacity").value);
  applyVisibility();
  renderList();
  refreshSite();
  route();
})();
