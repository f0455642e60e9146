"""Fine-tuning of pretrained backbones: classification and segmentation modules, their data, weight loading.

- ``medssl.finetune.pretrained``: ``load_backbone_weights`` (run dir, checkpoint, export dir)
- ``medssl.finetune.classification``: ``ClassificationModule`` (linear probe or fine-tune)
- ``medssl.finetune.cls_data``: ``ClassificationDataModule`` (patient-level splits, label fractions)
- ``medssl.finetune.decoders``: ``SegmentationNet`` (U-Net / UNETR decoders, or a U-Net's own)
- ``medssl.finetune.segmentation``: ``SegmentationModule`` (DiceCE, sliding-window Dice and HD95)
- ``medssl.finetune.seg_data``: ``SegmentationDataModule``, ``paired_folders`` (image + mask pairs, FOV masks)

Import from those modules directly; this package stays import-light (the CLI's error list imports it).
"""
