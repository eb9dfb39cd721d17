"""Visualization: heatmap overlays, labels, contact sheets, overlay videos."""

from avssl.viz.overlay import (
    apply_colormap,
    contact_sheet,
    draw_label,
    overlay,
    save_png,
    write_overlay_video,
)

__all__ = ["apply_colormap", "contact_sheet", "draw_label", "overlay", "save_png",
           "write_overlay_video"]
