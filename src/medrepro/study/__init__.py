"""Staged studies: grids of classifier runs and the selection between stages."""
