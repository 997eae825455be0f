select member_id, first_name from {{ ref('stg_members') }}
