"""Modality-agnostic fine-tuning: the same strategy objects adapt a grid GNN, a CNN or a transformer.

Core (any `TransferModel`, see gridtune.nn.protocol):
    trainer.fit / predict / TrainConfig / Task      generic loop with early stopping
    registry.make_strategy(name, **options)         scratch, linear-probe, full, partial, gradual,
                                                    discriminative, l2sp, adapter, lora, head-swap,
                                                    decoder, dann, coral, mmd, self-training
    adapt.adapt(model, strategy, train, val, task, config, extra_losses=...)
    ssl.pre_adapt                                    masked-feature pre-adaptation (two-stage)
    alignment.PairedAlignment                        pull paired entities' embeddings together
    calibration / decision / verdict                 temperature scaling + ECE, decision curves,
                                                    transfer gain with a bootstrap interval
Grid entry point:
    api.finetune(checkpoint, data, labels=..., strategy=..., out_dir=...)   (`gridtune finetune`)
"""
