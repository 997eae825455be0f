select loan_id, book_id, member_id, borrowed_on, returned_on from {{ source('raw', 'loans') }}
