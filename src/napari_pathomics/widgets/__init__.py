"""napari dock widgets, reader, writer and sample data: the only package that imports napari/Qt.

Widgets are thin: they call the core and apply ``layers``' tuples. Importing this package has
no process-wide side effects (the model's import guard and allocator tuning happen where a
model is first built, in ``inference``).
"""
