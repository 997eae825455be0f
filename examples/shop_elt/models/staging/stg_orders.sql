select
    cast(order_id as integer) as order_id,
    cast(customer_id as integer) as customer_id,
    cast(ordered_at as timestamp) as ordered_at,
    cast(amount as decimal(10, 2)) as amount
from {{ source('raw', 'orders') }}
