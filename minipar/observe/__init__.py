"""Watching a run: spans on a timeline (``trace``), its pictures (``plot``), tensor and graph
memory (``memory``), and the alpha-beta-gamma cost model (``cost``). Import the one you need:
``from minipar.observe import trace``; nothing here is loaded by ``import minipar``."""
