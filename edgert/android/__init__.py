"""`edgert export android`: `export` writes the model with its metadata into an app's assets and renders a Kotlin
class from `templates/` (shipped as package data). Above the metadata writer."""

from edgert.android.export import ANDROID_DELEGATES, LITERT_VERSION, check_package, class_name_for, export_android

__all__ = ["ANDROID_DELEGATES", "LITERT_VERSION", "check_package", "class_name_for", "export_android"]
