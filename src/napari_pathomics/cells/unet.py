"""The learned nuclei network: a small U-Net on a timm ``features_only`` encoder.

Three output maps per pixel, at the input's resolution: nucleus logit, boundary logit (the
inner rim of each nucleus, where touching nuclei meet) and a distance map (each nucleus' own
Euclidean distance transform scaled to 1 at its centre). Post-processing seeds one instance per
distance peak and grows it over the predicted foreground (``cells.learned``). A full-resolution
stem on the raw input keeps small nuclei sharp although the encoder starts at stride 2.

torch and timm are imported when a network is built, never at module import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_unet", "OUTPUTS", "DEFAULT_ENCODER", "DEFAULT_DECODER"]

#: Output channels in order.
OUTPUTS = ("foreground", "boundary", "distance")
DEFAULT_ENCODER = "efficientnet_lite0"
DEFAULT_DECODER = (96, 64, 48, 32)


def build_unet(encoder: str = DEFAULT_ENCODER, decoder: tuple[int, ...] = DEFAULT_DECODER, stem: int = 16) -> Any:
    """A fresh (randomly initialised) nuclei U-Net as a ``torch.nn.Module``."""
    import timm  # heavy: torch
    import torch  # heavy
    from torch import nn  # heavy

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class NucleiUNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            enc: Any = timm.create_model(encoder, features_only=True, pretrained=False)
            self.encoder = enc
            chans = list(enc.feature_info.channels())  # strides 2, 4, 8, 16, 32
            ups = []
            cin = chans[-1]
            for skip, cout in zip(reversed(chans[:-1]), decoder):
                ups.append(block(cin + skip, cout))
                cin = cout
            self.ups = nn.ModuleList(ups)
            self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(True))
            self.last = block(cin + stem, max(stem, 16))
            self.head = nn.Conv2d(max(stem, 16), len(OUTPUTS), 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            feats = self.encoder(x)
            y = feats[-1]
            for up, skip in zip(self.ups, reversed(feats[:-1])):
                y = nn.functional.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                y = up(torch.cat([y, skip], 1))
            y = nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
            y = self.last(torch.cat([y, self.stem(x)], 1))
            return self.head(y)

    return NucleiUNet()
