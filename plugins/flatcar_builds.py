"""The deployment's entry for the Flatcar builds page (flatcar_airflow.plugin.FlatcarPlugin).

An installed flatcar-airflow registers the plugin itself, through its ``airflow.plugins`` entry point; this
file then does nothing, so Airflow does not see the plugin twice. Where the package is importable but not
installed with its entry points (a source tree on PYTHONPATH, an image that copies the package), Airflow
finds the plugin here, in ``[core] plugins_folder``.
"""

from importlib.metadata import entry_points

if not any(
    entry.value == "flatcar_airflow.plugin:FlatcarPlugin" for entry in entry_points(group="airflow.plugins")
):
    from flatcar_airflow.plugin import FlatcarPlugin

    __all__ = ["FlatcarPlugin"]
