"""`edgert export android`: `export` writes the model with its metadata into an app's assets and renders a Kotlin
class from `templates/` (shipped as package data). Above the metadata writer."""
