-- Whether this date's daily run records the catalogue it landed (catalogue/_macros.sql).
{% import "catalogue/_macros.sql" as catalogue %}
SELECT {{ catalogue.records(ds) }} AS records_catalogue
