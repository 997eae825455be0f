select
    cast(customer_id as integer) as customer_id,
    trim(name) as name,
    country
from {{ source('raw', 'customers') }}
