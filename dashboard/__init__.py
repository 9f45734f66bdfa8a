"""The Dash app: the clinician's what-if page, the educator's teaching cases and the
trial designer's virtual trials.

Run it with ``twinsim dashboard`` (http://127.0.0.1:8050) or from Python::

    from twinsim.dashboard import serve
    serve(port=8050)
"""

from ._app import DashboardState as DashboardState
from ._app import create_app as create_app
from ._app import serve as serve
