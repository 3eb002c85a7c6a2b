"""The typed model of what crosses the wire: request bodies, schema features, responses and events.

One msgspec Struct per JSON shape. The Structs' types and ``Meta`` constraints are the single-field rules
(validation and the OpenAPI document both come from them); cross-field rules are methods of the Struct
they concern; ``explain`` maps a refusal to the error codes and messages clients rely on.
"""
