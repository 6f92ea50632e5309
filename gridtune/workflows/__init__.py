"""Grid workflows: the glue that turns datasets, models and strategies into checkpoints and results.

    pretrain.pretrain(data, out_dir, config)                  -> PretrainResult   (`gridtune pretrain`)
    transfer.finetune(checkpoint, data, out_dir, config)      -> FinetuneResult   (`gridtune finetune`)
    transfer.verdict(results)                                 -> Verdict over seeds
    evaluate.evaluate_checkpoint(checkpoint, data)            -> report dict      (`gridtune evaluate`)

Configs are typed (`configs.PretrainConfig`, `configs.TransferConfig`, with the model's
`ModelConfig` and the trainer's `TrainConfig` inside); results are typed (`results`) and written
as JSON with one vocabulary (docs/results.md, "Result files").
"""
