"""Features built on the gateway layer: bulk send streams, report and reply streams
(with the delivery tracker), and cost estimates. Each is given a ``Gateway``."""
