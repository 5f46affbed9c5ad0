"""The proxy's parts below its entry (gateway/proxy.py runs a request through them, in order):

body.py       the request-body policy: the quota check, the meter, reading the body whole
              (in memory or spooled), and the answer to a body that breaks a rule
upstream.py   the exchange with a worker or the owner node: connections, sending twice
              only when safe, the answer streamed back
wire.py       small requests (a whole body in memory) to this host's workers: one write,
              the answer parsed by httptools, connections kept per worker port
delivery.py   the client's side of an answer, at the client's pace, after the worker is free
"""
