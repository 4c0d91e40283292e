"""The OpenAI-compatible server (``minicpmo-server``; optional extra ``minicpmo-cpp[server]``)."""

from .config import ServerConfig

__all__ = ["ServerConfig", "create_app"]


def create_app(config: ServerConfig, session=None):
    from .app import create_app as make  # FastAPI is imported only when a server is made

    return make(config, session)
