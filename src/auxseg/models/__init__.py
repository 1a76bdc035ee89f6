"""Networks: backbones behind a registry, the CAM classifier, AuxSegNet and DeepLab."""
