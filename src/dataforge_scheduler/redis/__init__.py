"""The Redis room: the lock, log-bus, change-notice and live-log ports on redis-py.

Only this room imports redis-py. Every key name comes from ``keys`` (the layout table
for operators is in that module's docstring, and it imports no redis-py, so the faces
name locks through it); ``backend.RedisBackend`` bundles the roles for one ``redis_url``;
every mutation that must be atomic is one Lua script. Import from the modules; this
package module imports nothing, so naming a key never loads a client.
"""

from __future__ import annotations
