"""Slides: the one opener over OpenSlide and tiffslide, levels, microns per pixel, RGB reads. Never imports torch."""

from histo_daen.slide.resolution import PLAUSIBLE_MPP_RANGE, best_level_for_downsample, is_plausible_mpp
from histo_daen.slide.slide import BackendChoice, Slide, SlideSource, open_slide

__all__ = [
    "PLAUSIBLE_MPP_RANGE",
    "BackendChoice",
    "Slide",
    "SlideSource",
    "best_level_for_downsample",
    "is_plausible_mpp",
    "open_slide",
]
