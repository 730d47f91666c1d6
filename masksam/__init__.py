"""masksam: prompt-free MaskSAM segmentation of 3D medical volumes on a frozen Segment Anything Model."""

__version__ = "0.1.0"
