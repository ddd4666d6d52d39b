"""Pictures: sample grids, trajectories, schedules, loss curves, 2-D point sets."""

from difflab.viz.images import GRID_SUFFIXES, grid_array, save_grid, to_uint8
from difflab.viz.plots import (PLOT_SUFFIXES, plot_image_rows, plot_labelled_rows, plot_loss_curve, plot_paths_2d, plot_points, plot_schedules,
                               plot_tradeoff)

__all__ = ["GRID_SUFFIXES", "PLOT_SUFFIXES", "grid_array", "save_grid", "to_uint8", "plot_image_rows", "plot_labelled_rows", "plot_loss_curve",
           "plot_paths_2d", "plot_points", "plot_schedules", "plot_tradeoff"]
