"""Routing of complex orders and exception cases to queues: the text model and the case simulator.

Offline: `ordersight route train | predict | simulate` (engine/routing/cli.py).
In-process:

    from engine.routing.text_model import TextRouter
    router = TextRouter.load(path)            # verifies checksums, re-checks parity
    r = router.route([subjects, bodies])      # one list per text column, in router.text_cols
    r.predicted, r.confidence, r.priority     # label or GENERAL, top probability, priority

Parts, in the order a case goes through them: `cases` (files and their rules) ->
`text_prep` (the one text rule) -> `text_fit` (scikit-learn: TF-IDF word and char_wb
n-grams, logistic regression, C and the confidence threshold on a validation split) ->
`onnx_export` (one ONNX graph, parity with scikit-learn) -> `text_session` (onnxruntime,
the parity rule) -> `text_model` (the model folder: train, load, route). `case_sim` with
`phrases/` writes simulated cases in English and German.
"""
