"""Routes of the builds page (placeholder while the page is built)."""

from fastapi import FastAPI

app = FastAPI(title="Flatcar builds")
