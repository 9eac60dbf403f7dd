"""`lymph view`: a local browser viewer of slides, tumor maps, detections and ground truth.

* ``catalog``: which slides there are (``data.slides.discover_slides``), what belongs to each
  (``S_tumor_map.tif``, ``S.csv``, ``scores.csv``, ``S_suggestions.geojson`` from the
  predictions folder; the annotation found by ``data.annotations.find_annotations``) and the
  JSON the viewer reads (slide list with FROC hit/miss/FP from ``model.camelyon``).
* ``tiles``: Deep Zoom tiles of a slide (read through lymph's own reader) and of its tumor map
  (colour-mapped, thresholded), with a size-bounded LRU cache of encoded tiles.
* ``server``: a stdlib ``ThreadingHTTPServer`` bound to 127.0.0.1; every URL is matched
  against the catalog's ids and a fixed list of packaged files, never joined to a path.
* ``export``: the same site as a static folder (tiles + HTML) that opens from ``file://``.
* ``static/``: ``index.html``, ``viewer.js``, ``viewer.css`` and OpenSeadragon 6.1.1 (BSD-3,
  ``OPENSEADRAGON-LICENSE.txt``), shipped in the package, never fetched at run time.
"""
