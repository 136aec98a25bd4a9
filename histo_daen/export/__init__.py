"""Export formats of slide tissue maps: OME-Zarr (``zarr_map``), QuPath GeoJSON (``geojson``), pictures (``overlay``).

Import the submodules directly; this package imports nothing heavy on its own.
"""
