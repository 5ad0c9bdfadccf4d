USE SCHEMA {{ schema }}
