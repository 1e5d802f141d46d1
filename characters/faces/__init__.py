"""Face analysis for the dataset report (and, through `characters` selectors, for training's likeness).

- `engine`: the detector, landmarks and embedding, loaded once per process (weights from registry packages).
- `measures`: sharpness, exposure, uniformity, perceptual hash, pose and background of one image.
- `photo`: one photo analysed (faces, boxes, embedding, flags) and its face-centred crop.
- `dataset`: the photos judged together (one identity, duplicates, variety, a summary score).
- `flags`: the codes and plain-language messages of everything the report can say.

Nothing here touches the database or storage: `characters.analysis` does, in Celery, never in a request.
"""
