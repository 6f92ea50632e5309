"""Modality-agnostic fine-tuning: the same strategy objects adapt a grid GNN, a CNN or a transformer.

Nothing here imports `gridtune.grids` or `gridtune.nn` (a test enforces it). A model is anything
that meets `protocol.TransferModel`.

    trainer.fit / predict / TrainConfig / Task      generic loop with early stopping
    registry.make_strategy(name, **options)         scratch, linear-probe, full, partial, gradual,
                                                    discriminative, l2sp, adapter, lora, head-swap,
                                                    decoder, dann, coral, mmd, self-training
    registry.rebuild_model(model, name, config)     a saved adapted model's structure, from its config
    adapt.adapt(model, strategy, train, val, task, config, extra_losses=...)
    ssl.pre_adapt                                    masked-feature pre-adaptation (two-stage)
    alignment.PairedAlignment                        pull paired entities' embeddings together
    metrics                                          classification metrics, ECE, reliability tables
    calibration / decision / verdict                 temperature and Platt scaling, decision curves,
                                                    transfer gain with a bootstrap interval

The grid workflows (`gridtune.workflows`) use these on grid data.
"""
