"""Device side of tftl: run and fine-tune exported models without TensorFlow.

    session.Session     a loaded model: predict, extract, train steps, grouped state
    loop.Trainer        fit(samples, epochs, schedule=Schedule(...)) -> state + history
    features            the feature cache and live decode+extract behind one interface
    evaluate            prediction, metrics, the skipped-files report
    labels              which output row is which class (fixed at export or given)
    run, cli            the tftl-train / tftl-eval / tftl-predict commands (config: their flags)
    data, checkpoint, modelfile, contract, interpreter, compiled: files and runtimes

Layers, each importing only from those below it (tools/import_floors.py draws them):
    io       errors, files, safezip, progress, schedule, metrics, contract, interpreter, compiled
    format   data, checkpoint (TrainState), modelfile (state.npz), labels, config, spec
    engine   session, features
    training loop, evaluate
    app      run, cli

Imports no TensorFlow (only numpy, Pillow, the standard library and ai_edge_litert or
tflite_runtime) so it runs on a phone-class device. Submodules are imported on demand;
this package file stays empty so `import tftl.runtime` costs nothing.
"""
