"""What an order is: the schema table, the rule table and its validator, the one encoder."""
