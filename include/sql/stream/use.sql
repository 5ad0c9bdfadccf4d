USE {{ schema }}
